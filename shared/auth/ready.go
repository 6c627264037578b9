package auth

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
)

// readyProbeKID is a key id no JWKS publishes: looking it up when no keys are held makes the
// JWKS client refetch through its unknown-kid rate limiter, the one refetch path there is.
const readyProbeKID = "portal-functions-keys-ready-probe"

// KeysReady reports whether tokens signed with the project's keys can verify now, for a health
// check. An HS256-only verifier has nothing to reach; keys already cached count even while the
// JWKS endpoint is down (they keep verifying). With none cached it asks the endpoint once,
// through the unknown-kid rate limiter, so a health probe polled in a loop cannot hammer
// Supabase. Still no key is fine for a project on the legacy secret whose endpoint answered
// (it publishes an empty set); otherwise it returns ErrNoSigningKeys.
func (v *Verifier) KeysReady(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	if n, err := v.cachedKeys(ctx); err != nil || n > 0 {
		return err
	}
	// The lookup's own error (limiter closed, endpoint down, kid unknown) says nothing the
	// count after it does not.
	_, _ = v.jwks.Storage().KeyRead(ctx, readyProbeKID)
	n, err := v.cachedKeys(ctx)
	switch {
	case err != nil:
		return err
	case n > 0:
		return nil
	case len(v.secret) > 0 && v.jwksReached.Load():
		// A project on the legacy secret publishes an empty set: its tokens verify with the
		// secret, and the endpoint answering says SUPABASE_URL is right.
		return nil
	default:
		return ErrNoSigningKeys
	}
}

// recordFetches returns a copy of c that stores in reached whether each response was a 2xx.
func recordFetches(c *http.Client, reached *atomic.Bool) *http.Client {
	out := *c
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		res, err := next.RoundTrip(r)
		reached.Store(err == nil && res.StatusCode >= 200 && res.StatusCode < 300)
		return res, err
	})
	return &out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (v *Verifier) cachedKeys(ctx context.Context) (int, error) {
	keys, err := v.jwks.Storage().KeyReadAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("read cached JWKS keys: %w", err)
	}
	return len(keys), nil
}
