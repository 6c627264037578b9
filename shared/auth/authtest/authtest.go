// Package authtest is a local stand-in for a Supabase project's Auth server, for tests: it
// serves a real JWKS over httptest (ES256 and RS256 keys generated per test, rotatable), holds
// a legacy HS256 secret, and mints access tokens shaped like Supabase's. Tests of any package
// get real signatures through the real auth.Verifier this way, instead of a fake identity:
//
//	iss := authtest.New(t)
//	v := iss.Verifier(t)
//	tok := iss.Token(t, userID, authtest.WithEmail("a@b.c"))
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/config"
)

// JWKSPath is where Supabase publishes a project's signing keys.
const JWKSPath = "/auth/v1/.well-known/jwks.json"

// Issuer is one test's Supabase Auth server. Safe for concurrent use.
type Issuer struct {
	t       testing.TB
	srv     *httptest.Server
	secret  []byte
	fetches atomic.Int64
	down    atomic.Bool

	mu      sync.Mutex
	keys    []signingKey      // published in the JWKS, oldest first
	current map[string]string // alg -> kid that signs by default
	retired map[string]signingKey
}

type signingKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

// New starts the JWKS server (closed when the test ends) with one ES256 and one RS256 key.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{
		t:       t,
		secret:  []byte("authtest-hs256-secret-" + uuid.NewString()),
		current: map[string]string{},
		retired: map[string]signingKey{},
	}
	i.addKey(auth.ES256)
	i.addKey(auth.RS256)
	i.srv = httptest.NewServer(http.HandlerFunc(i.serveJWKS))
	t.Cleanup(i.srv.Close)
	return i
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != JWKSPath || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	i.fetches.Add(1)
	if i.down.Load() {
		http.Error(w, `{"message":"service unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	i.mu.Lock()
	keys := slices.Clone(i.keys)
	i.mu.Unlock()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{
				ALG:    jwkset.ALG(k.alg),
				KID:    k.kid,
				KEYOPS: []jwkset.KEYOPS{jwkset.KeyOpsVerify},
				USE:    jwkset.UseSig,
			},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	w.Header().Set("Content-Type", "application/json")
	// What Supabase sends: clients may cache the key set for 10 minutes.
	w.Header().Set("Cache-Control", "public, max-age=600")
	_ = json.NewEncoder(w).Encode(set)
}

func (i *Issuer) addKey(alg string) string {
	i.t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case auth.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case auth.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		i.t.Fatalf("authtest: cannot generate a key for %q", alg)
	}
	if err != nil {
		i.t.Fatalf("authtest: generate %s key: %v", alg, err)
	}
	k := signingKey{kid: uuid.NewString(), alg: alg, priv: priv}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append(i.keys, k)
	i.current[alg] = k.kid
	return k.kid
}

// URL is the project URL (SUPABASE_URL): tokens carry iss = URL + "/auth/v1".
func (i *Issuer) URL() string { return i.srv.URL }

// Secret is the project's legacy HS256 secret (SUPABASE_JWT_SECRET).
func (i *Issuer) Secret() []byte { return slices.Clone(i.secret) }

// Config is an auth.Config that trusts this issuer: its URL, secret and JWKS.
func (i *Issuer) Config() auth.Config {
	return auth.Config{
		SupabaseURL: i.srv.URL,
		JWTSecret:   config.Secret(i.secret),
		JWKSURL:     i.srv.URL + JWKSPath,
		HTTPClient:  i.srv.Client(),
	}
}

// Verifier is a real auth.Verifier for Config(), its JWKS already fetched. Its background
// refresh stops when the test ends.
func (i *Issuer) Verifier(t testing.TB) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(t.Context(), i.Config())
	if err != nil {
		t.Fatalf("authtest: new verifier: %v", err)
	}
	return v
}

// KID is the key id that signs alg tokens by default (ES256 or RS256).
func (i *Issuer) KID(alg string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current[alg]
}

// Rotate publishes a new ES256 key, makes it the default signer and returns its kid. The old
// key stays published (tokens it signed keep verifying) until RemoveKey.
func (i *Issuer) Rotate() string {
	return i.addKey(auth.ES256)
}

// RemoveKey stops publishing kid (a revoked key). Tokens can still be signed with it through
// WithKID, to prove a verifier stops accepting them. If kid was the default signer of its
// algorithm, the newest key of that algorithm still published takes over.
func (i *Issuer) RemoveKey(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = slices.DeleteFunc(i.keys, func(k signingKey) bool {
		if k.kid == kid {
			i.retired[kid] = k
			return true
		}
		return false
	})
	// If it was the default signer, the newest published key of its algorithm takes over.
	for alg, cur := range i.current {
		if cur != kid {
			continue
		}
		delete(i.current, alg)
		for _, k := range i.keys {
			if k.alg == alg {
				i.current[alg] = k.kid
			}
		}
	}
}

// PublicKey is the public half of a key this issuer generated (nil if unknown), e.g. to try
// an HS256 token signed with an RSA public key's bytes.
func (i *Issuer) PublicKey(kid string) crypto.PublicKey {
	k, ok := i.key(kid)
	if !ok {
		return nil
	}
	return k.priv.Public()
}

func (i *Issuer) key(kid string) (signingKey, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, k := range i.keys {
		if k.kid == kid {
			return k, true
		}
	}
	k, ok := i.retired[kid]
	return k, ok
}

// SetDown makes the JWKS endpoint answer 503 (down = true) or serve keys again.
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// Fetches counts the requests the JWKS endpoint received, to prove caching and rate limits.
func (i *Issuer) Fetches() int { return int(i.fetches.Load()) }

// TokenOption shapes one token.
type TokenOption func(*tokenSpec)

type tokenSpec struct {
	alg       string
	kid       string
	claims    auth.TokenClaims
	overrides map[string]any
}

// WithAlg signs with alg: "ES256" (the default), "RS256" or "HS256" (the legacy secret).
func WithAlg(alg string) TokenOption { return func(s *tokenSpec) { s.alg = alg } }

// WithKID signs with a specific key (published or removed); its algorithm comes with it.
func WithKID(kid string) TokenOption { return func(s *tokenSpec) { s.kid = kid } }

// WithEmail sets the email claim.
func WithEmail(email string) TokenOption { return func(s *tokenSpec) { s.claims.Email = email } }

// WithRole sets the role claim ("authenticated" by default; try "anon", "service_role").
func WithRole(role string) TokenOption { return func(s *tokenSpec) { s.claims.Role = role } }

// WithAnonymous marks the token as a Supabase anonymous user's (is_anonymous = true).
func WithAnonymous() TokenOption { return func(s *tokenSpec) { s.claims.IsAnonymous = true } }

// WithAAL sets the authenticator assurance level ("aal1" by default, "aal2" after MFA).
func WithAAL(aal string) TokenOption { return func(s *tokenSpec) { s.claims.AAL = aal } }

// WithSessionID sets session_id (a random UUID by default).
func WithSessionID(id string) TokenOption { return func(s *tokenSpec) { s.claims.SessionID = id } }

// WithAppMetadata sets app_metadata.
func WithAppMetadata(m map[string]any) TokenOption {
	return func(s *tokenSpec) { s.claims.AppMetadata = m }
}

// WithIssuer sets iss (the issuer's URL + "/auth/v1" by default).
func WithIssuer(iss string) TokenOption { return func(s *tokenSpec) { s.claims.Issuer = iss } }

// WithAudience sets aud: one value is written as a string, several as an array.
func WithAudience(aud ...string) TokenOption {
	return func(s *tokenSpec) { s.claims.Audience = aud }
}

// WithExpiry sets exp (one hour from now by default).
func WithExpiry(exp time.Time) TokenOption { return func(s *tokenSpec) { s.claims.ExpiresAt = exp } }

// WithNotBefore sets nbf (absent by default, as in Supabase's tokens).
func WithNotBefore(nbf time.Time) TokenOption {
	return func(s *tokenSpec) { s.claims.NotBefore = nbf }
}

// WithIssuedAt sets iat (now by default).
func WithIssuedAt(iat time.Time) TokenOption { return func(s *tokenSpec) { s.claims.IssuedAt = iat } }

// WithClaims sets any claims last, overriding the others; a nil value removes the claim.
func WithClaims(m map[string]any) TokenOption {
	return func(s *tokenSpec) {
		if s.overrides == nil {
			s.overrides = map[string]any{}
		}
		maps.Copy(s.overrides, m)
	}
}

// Token mints an access token for userID shaped like Supabase's (iss, sub, aud, exp, iat,
// email, phone, app_metadata, user_metadata, role, aal, amr, session_id, is_anonymous), signed
// ES256 by default.
func (i *Issuer) Token(t testing.TB, userID uuid.UUID, opts ...TokenOption) string {
	t.Helper()
	now := time.Now()
	s := tokenSpec{
		alg: auth.ES256,
		claims: auth.TokenClaims{
			Subject:     userID.String(),
			Role:        auth.RoleAuthenticated,
			AAL:         "aal1",
			SessionID:   uuid.NewString(),
			AppMetadata: map[string]any{"provider": "email", "providers": []any{"email"}},
			Issuer:      auth.IssuerFor(i.srv.URL),
			Audience:    []string{auth.AudienceAuthenticated},
			IssuedAt:    now,
			ExpiresAt:   now.Add(time.Hour),
			Extra: map[string]any{
				"phone":         "",
				"user_metadata": map[string]any{},
				"amr":           []any{map[string]any{"method": "password", "timestamp": now.Unix()}},
			},
		},
	}
	for _, o := range opts {
		o(&s)
	}
	payload := s.claims.Map()
	for k, v := range s.overrides {
		if v == nil {
			delete(payload, k)
			continue
		}
		payload[k] = v
	}
	if s.alg == auth.HS256 && s.kid == "" {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(payload)).SignedString(i.secret)
		if err != nil {
			t.Fatalf("authtest: sign HS256 token: %v", err)
		}
		return tok
	}
	kid := s.kid
	if kid == "" {
		kid = i.KID(s.alg)
	}
	k, ok := i.key(kid)
	if !ok {
		t.Fatalf("authtest: no key %q for %s", kid, s.alg)
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(k.alg), jwt.MapClaims(payload))
	tok.Header["kid"] = k.kid
	signed, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatalf("authtest: sign %s token: %v", k.alg, err)
	}
	return signed
}
