package auth_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
)

// FuzzVerify feeds the parser real tokens of each algorithm and broken ones, mutated. Verify
// must never panic, must refuse with a *TokenError, and must never accept a token whose signed
// part (header and payload) is not one we minted with the issuer's keys.
func FuzzVerify(f *testing.F) {
	iss := authtest.New(f)
	cfg := iss.Config()
	cfg.FetchTimeout = 100 * time.Millisecond // an unknown kid must not stall the fuzzer
	v, err := auth.NewVerifier(f.Context(), cfg)
	if err != nil {
		f.Fatal(err)
	}
	user := uuid.New()
	minted := map[string]bool{}
	mint := func(opts ...authtest.TokenOption) string {
		tok := iss.Token(f, user, opts...)
		minted[tok[:strings.LastIndex(tok, ".")]] = true
		return tok
	}
	valid := []string{
		mint(authtest.WithAlg(auth.ES256)),
		mint(authtest.WithAlg(auth.RS256)),
		mint(authtest.WithAlg(auth.HS256)),
		mint(authtest.WithAnonymous(), authtest.WithEmail("a@b.c")),
		mint(authtest.WithAudience("x", auth.AudienceAuthenticated)),
	}
	for _, tok := range valid {
		f.Add(tok)
	}
	// Signed by us but refused on its claims: still "minted", so accepting one would be
	// a claims bug the asserts below do not catch; the refusal tests cover those.
	f.Add(iss.Token(f, user, authtest.WithExpiry(time.Now().Add(-time.Hour))))
	f.Add(iss.Token(f, user, authtest.WithIssuer("https://evil.example/auth/v1")))

	parts := strings.Split(valid[0], ".")
	pub := iss.PublicKey(iss.KID(auth.RS256)).(*rsa.PublicKey)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	confused := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user.String(), "role": "authenticated"})
	confused.Header["kid"] = iss.KID(auth.RS256)
	confusedTok, _ := confused.SignedString(pemBytes)
	for _, s := range []string{
		"", ".", "..", "a.b.c", "Bearer " + valid[0],
		b64(map[string]any{"alg": "none"}) + "." + parts[1] + ".",
		b64(map[string]any{"alg": "ES256", "kid": 7}) + "." + parts[1] + "." + parts[2],
		b64(map[string]any{"alg": "ES256", "kid": "nope"}) + "." + parts[1] + "." + parts[2],
		b64(map[string]any{"alg": "HS256"}) + "." + b64(map[string]any{"exp": 1e308, "aud": []any{1, nil}}) + ".AA",
		parts[0] + "." + b64(map[string]any{"sub": user.String(), "role": "service_role"}) + "." + parts[2],
		confusedTok,
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(t.Context(), token)
		if err != nil {
			var te *auth.TokenError
			if !errors.As(err, &te) || te.Reason == nil {
				t.Fatalf("refusal is not a *TokenError with a reason: %v", err)
			}
			return
		}
		i := strings.LastIndex(token, ".")
		if i < 0 || !minted[token[:i]] {
			t.Fatalf("accepted a token we did not mint: %q", token)
		}
		if id.UserID != user {
			t.Fatalf("accepted token names %s, minted for %s", id.UserID, user)
		}
	})
}
