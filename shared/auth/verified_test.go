package auth_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
)

// clock is a settable Config.Now.
type clock struct{ at atomic.Int64 }

func (c *clock) now() time.Time       { return time.Unix(0, c.at.Load()) }
func (c *clock) set(t time.Time)      { c.at.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration)  { c.at.Add(int64(d)) }
func newClock(t time.Time) *clock     { c := &clock{}; c.set(t); return c }
func (c *clock) cfg(cfg *auth.Config) { cfg.Now = c.now }

// A verified HS256 token is answered from memory on its next requests, but never past its
// expiry: the same token, once expired, is refused as expired.
func TestVerifyRefusesARememberedTokenOnceItExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	c := newClock(start)
	v := newVerifier(t, b.iss, func(cfg *auth.Config) { c.cfg(cfg); cfg.Leeway = time.Second })
	tok := b.iss.Token(t, b.user, authtest.WithAlg(auth.HS256), authtest.WithExpiry(start.Add(20*time.Second)))

	for range 3 {
		id, err := v.Verify(t.Context(), tok)
		require.NoError(t, err)
		require.Equal(t, b.user, id.UserID)
	}
	c.add(20*time.Second + 2*time.Second) // past exp and the leeway, within the memory's minute
	_, err := v.Verify(t.Context(), tok)
	requireRefused(t, err, auth.ErrExpired)
}

// Memory is by the token's exact text: a token whose signature was changed after its twin
// verified is checked, and refused.
func TestVerifyChecksATamperedTwinOfARememberedToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.iss.Token(t, b.user, authtest.WithAlg(auth.HS256))
	_, err := b.v.Verify(t.Context(), tok)
	require.NoError(t, err)
	last := tok[len(tok)-2]
	swap := byte('A')
	if last == 'A' {
		swap = 'B'
	}
	_, err = b.v.Verify(t.Context(), tok[:len(tok)-2]+string(swap)+tok[len(tok)-1:])
	requireRefused(t, err, auth.ErrInvalidSignature)
}

// A caller that changes the identity it got (its app_metadata map) changes nothing for the
// next request with the same token.
func TestVerifyGivesEachCallerItsOwnIdentity(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.iss.Token(t, b.user, authtest.WithAlg(auth.HS256), authtest.WithAppMetadata(map[string]any{"provider": "email"}))
	first, err := b.v.Verify(t.Context(), tok)
	require.NoError(t, err)
	first.AppMetadata["provider"] = "changed"
	second, err := b.v.Verify(t.Context(), tok)
	require.NoError(t, err)
	require.Equal(t, "email", second.AppMetadata["provider"])
}
