package auth_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
)

// KeysReady tells a health check whether tokens can verify: keys held in the cache count even
// while the JWKS endpoint is down; with none held it tries the endpoint once (rate-limited) and
// says ErrNoSigningKeys while that fails; an HS256-only verifier has nothing to reach.
func TestKeysReadyTellsWhetherTokensCanVerify(t *testing.T) {
	t.Parallel()

	t.Run("cached keys survive an outage without a fetch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.iss.SetDown(true)
		fetched := b.iss.Fetches()
		require.NoError(t, b.v.KeysReady(t.Context()))
		require.Equal(t, fetched, b.iss.Fetches(), "cached keys answer without a request")
	})

	t.Run("no keys and the endpoint down", func(t *testing.T) {
		t.Parallel()
		iss := authtest.New(t)
		iss.SetDown(true)
		v := newVerifier(t, iss, func(c *auth.Config) { c.UnknownKIDRateLimit = time.Millisecond })
		require.ErrorIs(t, v.KeysReady(t.Context()), auth.ErrNoSigningKeys)

		iss.SetDown(false)
		require.Eventually(t, func() bool { return v.KeysReady(t.Context()) == nil }, 10*time.Second, 5*time.Millisecond,
			"once the endpoint is back, the next check fetches the keys")
	})

	t.Run("the refetch shares the unknown-kid rate limit", func(t *testing.T) {
		t.Parallel()
		iss := authtest.New(t)
		iss.SetDown(true)
		v := newVerifier(t, iss, func(c *auth.Config) { c.UnknownKIDRateLimit = time.Hour })
		fetched := iss.Fetches()
		for range 5 {
			require.ErrorIs(t, v.KeysReady(t.Context()), auth.ErrNoSigningKeys)
		}
		require.LessOrEqual(t, iss.Fetches()-fetched, 1, "a health probe cannot hammer the key source")
	})

	t.Run("legacy project: an empty key set reached, tokens signed with the secret", func(t *testing.T) {
		t.Parallel()
		iss := authtest.New(t)
		iss.RemoveKey(iss.KID(auth.ES256))
		iss.RemoveKey(iss.KID(auth.RS256))
		v := newVerifier(t, iss, func(c *auth.Config) { c.UnknownKIDRateLimit = time.Hour })
		require.NoError(t, v.KeysReady(t.Context()), "Supabase publishes no keys for the legacy secret")

		noSecret := newVerifier(t, iss, func(c *auth.Config) { c.JWTSecret = ""; c.UnknownKIDRateLimit = time.Hour })
		require.ErrorIs(t, noSecret.KeysReady(t.Context()), auth.ErrNoSigningKeys, "no secret and no key: nothing verifies")
	})

	t.Run("HS256 only", func(t *testing.T) {
		t.Parallel()
		iss := authtest.New(t)
		iss.SetDown(true)
		v := newVerifier(t, iss, func(c *auth.Config) { c.DisableJWKS = true })
		require.NoError(t, v.KeysReady(t.Context()))
		require.Zero(t, iss.Fetches())
	})
}
