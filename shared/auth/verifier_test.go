package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
)

type bundle struct {
	iss  *authtest.Issuer
	v    *auth.Verifier
	user uuid.UUID
}

func setup(t *testing.T) bundle {
	t.Helper()
	iss := authtest.New(t)
	return bundle{iss: iss, v: iss.Verifier(t), user: uuid.New()}
}

// newVerifier builds a verifier for iss with cfg changed by edit.
func newVerifier(t *testing.T, iss *authtest.Issuer, edit func(*auth.Config)) *auth.Verifier {
	t.Helper()
	cfg := iss.Config()
	edit(&cfg)
	v, err := auth.NewVerifier(t.Context(), cfg)
	require.NoError(t, err)
	return v
}

// requireRefused asserts that err is a *TokenError for reason.
func requireRefused(t *testing.T, err error, reason error) {
	t.Helper()
	require.ErrorIs(t, err, reason)
	var te *auth.TokenError
	require.ErrorAs(t, err, &te)
	require.Equal(t, reason, te.Reason)
}

func segments(t *testing.T, tok string) []string {
	t.Helper()
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	return parts
}

func b64(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// signWith signs claims with a key the issuer never published, under header kid.
func signWith(t *testing.T, method jwt.SigningMethod, key any, kid string, claims map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func payloadOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(segments(t, tok)[1])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

func TestVerifyAcceptsEachSupabaseAlgorithm(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, alg := range []string{auth.HS256, auth.ES256, auth.RS256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			session := uuid.NewString()
			tok := b.iss.Token(t, b.user, authtest.WithAlg(alg), authtest.WithEmail("ada@example.com"),
				authtest.WithAAL("aal2"), authtest.WithSessionID(session),
				authtest.WithAppMetadata(map[string]any{"provider": "github"}))

			id, err := b.v.Verify(t.Context(), tok)

			require.NoError(t, err)
			require.Equal(t, b.user, id.UserID)
			require.Equal(t, "ada@example.com", id.Email)
			require.Equal(t, auth.RoleAuthenticated, id.Role)
			require.Equal(t, "aal2", id.AAL)
			require.Equal(t, session, id.SessionID)
			require.False(t, id.IsAnonymous)
			require.Equal(t, map[string]any{"provider": "github"}, id.AppMetadata)
			// Claims are the signed payload, byte for byte: Postgres gets what Supabase signed.
			signed, err := base64.RawURLEncoding.DecodeString(segments(t, tok)[1])
			require.NoError(t, err)
			require.Equal(t, signed, []byte(id.Claims))
		})
	}
}

func TestVerifyReadsAnonymousUsers(t *testing.T) {
	t.Parallel()
	b := setup(t)

	id, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithAnonymous()))

	require.NoError(t, err)
	require.True(t, id.IsAnonymous)
}

func TestVerifyAcceptsAudienceArrayContainingAuthenticated(t *testing.T) {
	t.Parallel()
	b := setup(t)

	id, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithAudience("portal", auth.AudienceAuthenticated)))

	require.NoError(t, err)
	require.Equal(t, b.user, id.UserID)
}

func TestVerifyAllowsSmallClockSkew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Each token is minted right before it is verified: a parallel subtest can wait long on a
	// loaded machine, and a token minted before that wait would be skewed by it too.
	for name, opt := range map[string]func(now time.Time) authtest.TokenOption{
		"expired 10s ago":         func(now time.Time) authtest.TokenOption { return authtest.WithExpiry(now.Add(-10 * time.Second)) },
		"valid from 10s from now": func(now time.Time) authtest.TokenOption { return authtest.WithNotBefore(now.Add(10 * time.Second)) },
		"issued 10s from now":     func(now time.Time) authtest.TokenOption { return authtest.WithIssuedAt(now.Add(10 * time.Second)) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, opt(time.Now())))
			require.NoError(t, err)
		})
	}
}

func TestVerifyRefusesAttacksAndBadTokens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	iss, user := b.iss, b.user
	now := time.Now()
	valid := iss.Token(t, user)
	parts := segments(t, valid)

	rsaPub, ok := iss.PublicKey(iss.KID(auth.RS256)).(*rsa.PublicKey)
	require.True(t, ok)
	der, err := x509.MarshalPKIXPublicKey(rsaPub)
	require.NoError(t, err)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	strangerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	strangerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)

	tampered := payloadOf(t, valid)
	tampered["role"] = "service_role"
	removed := iss.Rotate()
	iss.RemoveKey(removed)

	jwksOnly := newVerifier(t, iss, func(c *auth.Config) { c.JWTSecret = "" })
	secretOnly := newVerifier(t, iss, func(c *auth.Config) { c.DisableJWKS = true })
	esOnly := newVerifier(t, iss, func(c *auth.Config) { c.Algorithms = []string{auth.ES256} })

	tests := []struct {
		name   string
		v      *auth.Verifier // b.v when nil
		token  string
		reason error
	}{
		{"empty", nil, "", auth.ErrMissingToken},
		{"not a JWT", nil, "hello", auth.ErrMalformedToken},
		{"two segments", nil, parts[0] + "." + parts[1], auth.ErrMalformedToken},
		{"payload not base64", nil, parts[0] + ".!!!." + parts[2], auth.ErrMalformedToken},
		{"payload not JSON", nil, parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[2], auth.ErrMalformedToken},
		{"padded signature", nil, valid + "=", auth.ErrMalformedToken},
		{"oversized", nil, parts[0] + "." + strings.Repeat("A", 20<<10) + "." + parts[2], auth.ErrMalformedToken},
		{"alg none", nil, b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", auth.ErrAlgorithmNotAllowed},
		{"alg None with kid", nil, b64(map[string]any{"alg": "None", "kid": iss.KID(auth.ES256)}) + "." + parts[1] + ".", auth.ErrAlgorithmNotAllowed},
		{"alg missing", nil, b64(map[string]any{"typ": "JWT"}) + "." + parts[1] + "." + parts[2], auth.ErrAlgorithmNotAllowed},
		{"alg HS512", nil, signWith(t, jwt.SigningMethodHS512, iss.Secret(), "", payloadOf(t, valid)), auth.ErrAlgorithmNotAllowed},
		{"HS256 signed with the RSA public key PEM", nil, signWith(t, jwt.SigningMethodHS256, rsaPEM, iss.KID(auth.RS256), payloadOf(t, valid)), auth.ErrInvalidSignature},
		{"HS256 with the RSA public key PEM, no secret configured", jwksOnly, signWith(t, jwt.SigningMethodHS256, rsaPEM, iss.KID(auth.RS256), payloadOf(t, valid)), auth.ErrAlgorithmNotAllowed},
		{"HS256 signed with another secret", nil, signWith(t, jwt.SigningMethodHS256, []byte("not-the-project-secret"), "", payloadOf(t, valid)), auth.ErrInvalidSignature},
		{"ES256 when JWKS is disabled", secretOnly, valid, auth.ErrAlgorithmNotAllowed},
		{"RS256 outside an ES256-only allow-list", esOnly, iss.Token(t, user, authtest.WithAlg(auth.RS256)), auth.ErrAlgorithmNotAllowed},
		{"ES256 by a stranger's key under our kid", nil, signWith(t, jwt.SigningMethodES256, strangerEC, iss.KID(auth.ES256), payloadOf(t, valid)), auth.ErrInvalidSignature},
		{"RS256 under the kid of our EC key", nil, signWith(t, jwt.SigningMethodRS256, strangerRSA, iss.KID(auth.ES256), payloadOf(t, valid)), auth.ErrUnknownKey},
		{"ES256 without kid", nil, signWith(t, jwt.SigningMethodES256, strangerEC, "", payloadOf(t, valid)), auth.ErrUnknownKey},
		{"unknown kid", nil, iss.Token(t, user, authtest.WithKID(removed)), auth.ErrUnknownKey},
		{"tampered payload", nil, parts[0] + "." + b64(tampered) + "." + parts[2], auth.ErrInvalidSignature},
		{"signature of another token", nil, parts[0] + "." + parts[1] + "." + segments(t, iss.Token(t, user))[2], auth.ErrInvalidSignature},
		{"expired", nil, iss.Token(t, user, authtest.WithExpiry(now.Add(-5*time.Minute))), auth.ErrExpired},
		{"expired HS256", nil, iss.Token(t, user, authtest.WithAlg(auth.HS256), authtest.WithExpiry(now.Add(-time.Minute))), auth.ErrExpired},
		{"no exp", nil, iss.Token(t, user, authtest.WithClaims(map[string]any{"exp": nil})), auth.ErrInvalidClaims},
		{"not yet valid", nil, iss.Token(t, user, authtest.WithNotBefore(now.Add(5*time.Minute))), auth.ErrNotYetValid},
		{"issued in the future", nil, iss.Token(t, user, authtest.WithIssuedAt(now.Add(5*time.Minute))), auth.ErrNotYetValid},
		{"wrong issuer", nil, iss.Token(t, user, authtest.WithIssuer("https://other.supabase.co/auth/v1")), auth.ErrWrongIssuer},
		{"legacy API key issuer", nil, iss.Token(t, user, authtest.WithIssuer("supabase")), auth.ErrWrongIssuer},
		{"no issuer", nil, iss.Token(t, user, authtest.WithClaims(map[string]any{"iss": nil})), auth.ErrInvalidClaims},
		{"wrong audience", nil, iss.Token(t, user, authtest.WithAudience("anon")), auth.ErrWrongAudience},
		{"audience array without authenticated", nil, iss.Token(t, user, authtest.WithAudience("anon", "portal")), auth.ErrWrongAudience},
		{"no audience", nil, iss.Token(t, user, authtest.WithClaims(map[string]any{"aud": nil})), auth.ErrInvalidClaims},
		{"exp of the wrong type", nil, iss.Token(t, user, authtest.WithClaims(map[string]any{"exp": "tomorrow"})), auth.ErrMalformedToken},
		{"sub not a UUID", nil, iss.Token(t, user, authtest.WithClaims(map[string]any{"sub": "admin"})), auth.ErrInvalidClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := tc.v
			if v == nil {
				v = b.v
			}

			id, err := v.Verify(t.Context(), tc.token)

			requireRefused(t, err, tc.reason)
			require.Equal(t, auth.Identity{}, id)
		})
	}
}

func TestVerifyFollowsKeyRotation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Every unknown kid may refetch at once here, so each step shows what a refresh does.
	v := newVerifier(t, b.iss, func(c *auth.Config) { c.UnknownKIDRateLimit = time.Millisecond })
	oldKID := b.iss.KID(auth.ES256)
	oldTok := b.iss.Token(t, b.user)
	_, err := v.Verify(t.Context(), oldTok)
	require.NoError(t, err)
	fetched := b.iss.Fetches()

	// A new kid appears and is fetched on first use.
	newKID := b.iss.Rotate()
	_, err = v.Verify(t.Context(), b.iss.Token(t, b.user))
	require.NoError(t, err)
	require.Equal(t, fetched+1, b.iss.Fetches())

	// The old key keeps working while it is published, without another fetch.
	_, err = v.Verify(t.Context(), oldTok)
	require.NoError(t, err)
	require.Equal(t, fetched+1, b.iss.Fetches())

	// Once removed, it stops working at the next refresh (here: caused by yet another new kid).
	b.iss.RemoveKey(oldKID)
	b.iss.Rotate()
	_, err = v.Verify(t.Context(), b.iss.Token(t, b.user))
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), oldTok)
	requireRefused(t, err, auth.ErrUnknownKey)
	_, err = v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithKID(newKID)))
	require.NoError(t, err)
}

func TestVerifyDropsRemovedKeysOnPeriodicRefresh(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v := newVerifier(t, b.iss, func(c *auth.Config) { c.JWKSRefresh = 10 * time.Millisecond })
	tok := b.iss.Token(t, b.user, authtest.WithAlg(auth.RS256))
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)

	b.iss.RemoveKey(b.iss.KID(auth.RS256))

	require.Eventually(t, func() bool {
		_, err := v.Verify(t.Context(), tok)
		return errors.Is(err, auth.ErrUnknownKey)
	}, 10*time.Second, 10*time.Millisecond)
}

func TestVerifyRefetchesUnknownKIDAtMostOncePerWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.Equal(t, 1, b.iss.Fetches(), "NewVerifier fetches the JWKS once")
	forged := b.iss.Rotate()
	b.iss.RemoveKey(forged)
	tok := b.iss.Token(t, b.user, authtest.WithKID(forged))

	for range 5 {
		_, err := b.v.Verify(t.Context(), tok)
		requireRefused(t, err, auth.ErrUnknownKey)
	}

	require.Equal(t, 2, b.iss.Fetches(), "one refetch for the unknown kid, then the rate limit holds")
	// Known keys keep verifying from the cache meanwhile.
	_, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user))
	require.NoError(t, err)
	require.Equal(t, 2, b.iss.Fetches())
}

func TestVerifyKeepsKnownKeysWhenJWKSIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.iss.SetDown(true)
	// An unknown kid makes the verifier try the endpoint, which fails.
	forged := b.iss.Rotate()
	b.iss.RemoveKey(forged)
	_, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithKID(forged)))
	requireRefused(t, err, auth.ErrUnknownKey)
	require.Equal(t, 2, b.iss.Fetches(), "the failed refetch reached the endpoint")

	for _, alg := range []string{auth.ES256, auth.RS256, auth.HS256} {
		_, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithAlg(alg)))
		require.NoError(t, err, alg)
	}
}

func TestNewVerifierStartsWhileJWKSIsDown(t *testing.T) {
	t.Parallel()
	iss := authtest.New(t)
	user := uuid.New()
	iss.SetDown(true)
	v := newVerifier(t, iss, func(c *auth.Config) { c.UnknownKIDRateLimit = time.Millisecond })

	_, err := v.Verify(t.Context(), iss.Token(t, user, authtest.WithAlg(auth.HS256)))
	require.NoError(t, err, "the legacy secret works without the JWKS")
	_, err = v.Verify(t.Context(), iss.Token(t, user))
	requireRefused(t, err, auth.ErrUnknownKey)

	iss.SetDown(false)
	_, err = v.Verify(t.Context(), iss.Token(t, user))
	require.NoError(t, err, "keys are fetched on the first token that needs them")
}

func TestNewVerifierDoesNotHangOnAStalledJWKS(t *testing.T) {
	t.Parallel()
	iss := authtest.New(t)
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stalled.Close)
	t.Cleanup(func() { close(release) })

	v := newVerifier(t, iss, func(c *auth.Config) {
		c.JWKSURL = stalled.URL + authtest.JWKSPath
		c.HTTPClient = nil
		c.FetchTimeout = 50 * time.Millisecond
	})

	_, err := v.Verify(t.Context(), iss.Token(t, uuid.New(), authtest.WithAlg(auth.HS256)))
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), iss.Token(t, uuid.New()))
	requireRefused(t, err, auth.ErrUnknownKey)
}

func TestNewVerifierRejectsUnusableConfig(t *testing.T) {
	t.Parallel()
	iss := authtest.New(t)
	tests := []struct {
		name string
		edit func(*auth.Config)
	}{
		{"no URL", func(c *auth.Config) { c.SupabaseURL = "" }},
		{"relative URL", func(c *auth.Config) { c.SupabaseURL = "project.supabase.co" }},
		{"nothing to verify with", func(c *auth.Config) { c.JWTSecret = ""; c.DisableJWKS = true }},
		{"HS256 without a secret", func(c *auth.Config) { c.JWTSecret = ""; c.Algorithms = []string{auth.HS256} }},
		{"ES256 without JWKS", func(c *auth.Config) { c.DisableJWKS = true; c.Algorithms = []string{auth.ES256} }},
		{"alg none", func(c *auth.Config) { c.Algorithms = []string{"none"} }},
		{"unsupported alg", func(c *auth.Config) { c.Algorithms = []string{"PS256"} }},
		{"empty allow-list", func(c *auth.Config) { c.Algorithms = []string{} }},
		{"cache longer than Supabase's", func(c *auth.Config) { c.JWKSRefresh = time.Hour }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := iss.Config()
			tc.edit(&cfg)

			v, err := auth.NewVerifier(t.Context(), cfg)

			require.ErrorIs(t, err, auth.ErrInvalidConfig)
			require.Nil(t, v)
		})
	}
}

func TestNewVerifierDefaultsTheJWKSURLFromTheProjectURL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v := newVerifier(t, b.iss, func(c *auth.Config) {
		c.JWKSURL = ""
		c.SupabaseURL += "/" // a trailing slash is common in env files
	})

	_, err := v.Verify(t.Context(), b.iss.Token(t, b.user))

	require.NoError(t, err)
}

func TestTokenErrorNamesReasonAndCause(t *testing.T) {
	t.Parallel()
	b := setup(t)

	_, err := b.v.Verify(t.Context(), b.iss.Token(t, b.user, authtest.WithExpiry(time.Now().Add(-time.Hour))))

	require.ErrorIs(t, err, jwt.ErrTokenExpired, "the library's cause stays reachable for logs")
	require.Contains(t, err.Error(), "token expired")
	_, err = b.v.Verify(t.Context(), "")
	require.EqualError(t, err, "verify token: missing token")
}

// A JWKS is only trusted for the key types its algorithms need: a symmetric key published by
// mistake, or a key without alg, is never used to check a token of another family.
func TestVerifyUsesJWKSKeysOnlyForTheirOwnAlgorithm(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	symmetric := []byte("a-symmetric-key-that-should-never-be-published")
	octJWK, err := jwkset.NewJWKFromKey(symmetric, jwkset.JWKOptions{
		Marshal:  jwkset.JWKMarshalOptions{Private: true},
		Metadata: jwkset.JWKMetadataOptions{KID: "oct"},
	})
	require.NoError(t, err)
	ecJWK, err := jwkset.NewJWKFromKey(&ecKey.PublicKey, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: "ec-no-alg"},
	})
	require.NoError(t, err)
	set, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{octJWK.Marshal(), ecJWK.Marshal()}})
	require.NoError(t, err)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(jwks.Close)
	v := newVerifier(t, b.iss, func(c *auth.Config) { c.JWKSURL = jwks.URL; c.HTTPClient = nil })
	claims := payloadOf(t, b.iss.Token(t, b.user))
	strangerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)

	// Sanity: the EC key does verify ES256 tokens it signed.
	_, err = v.Verify(t.Context(), signWith(t, jwt.SigningMethodES256, ecKey, "ec-no-alg", claims))
	require.NoError(t, err)

	tests := []struct {
		name  string
		token string
	}{
		{"HS256 under the symmetric kid", signWith(t, jwt.SigningMethodHS256, symmetric, "oct", claims)},
		{"ES256 under the symmetric kid", signWith(t, jwt.SigningMethodES256, ecKey, "oct", claims)},
		{"RS256 under an EC kid without alg", signWith(t, jwt.SigningMethodRS256, strangerRSA, "ec-no-alg", claims)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Verify(t.Context(), tc.token)
			require.ErrorIs(t, err, auth.ErrInvalidSignature)
		})
	}
}
