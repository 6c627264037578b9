package auth

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenClaims describes a Supabase access token to mint. Zero fields are left out of the
// token, so a caller can mint exactly the (in)valid token it needs.
type TokenClaims struct {
	Subject     string         // sub: the user's id
	Email       string         // email
	Role        string         // role: "authenticated" for a signed-in user
	AAL         string         // aal: "aal1" or "aal2"
	SessionID   string         // session_id
	IsAnonymous bool           // is_anonymous (always written, as Supabase does)
	AppMetadata map[string]any // app_metadata
	Issuer      string         // iss: IssuerFor(SupabaseURL)
	Audience    []string       // aud: one value is written as a string, several as an array
	IssuedAt    time.Time      // iat
	ExpiresAt   time.Time      // exp
	NotBefore   time.Time      // nbf
	// Extra claims (user_metadata, amr, phone, ...), written last so they can also override.
	Extra map[string]any
}

// Map is the JSON payload of the token, for signing with any algorithm (authtest signs ES256
// and RS256 tokens from it).
func (c TokenClaims) Map() map[string]any {
	m := map[string]any{"is_anonymous": c.IsAnonymous}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("sub", c.Subject)
	set("email", c.Email)
	set("role", c.Role)
	set("aal", c.AAL)
	set("session_id", c.SessionID)
	set("iss", c.Issuer)
	if c.AppMetadata != nil {
		m["app_metadata"] = c.AppMetadata
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		m["aud"] = c.Audience[0]
	default:
		m["aud"] = c.Audience
	}
	for k, t := range map[string]time.Time{"iat": c.IssuedAt, "exp": c.ExpiresAt, "nbf": c.NotBefore} {
		if !t.IsZero() {
			m[k] = t.Unix()
		}
	}
	maps.Copy(m, c.Extra)
	return m
}

// MintHS256 signs c with the project's legacy HS256 secret. It exists for local development:
// the dev server and `make events` mint tokens for the local project secret with it. Never
// call it with a production secret outside a test.
func MintHS256(secret []byte, c TokenClaims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("mint HS256 token: empty secret")
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(c.Map())).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint HS256 token: %w", err)
	}
	return tok, nil
}
