package auth

import (
	"context"
	"fmt"
)

// readyProbeKID is a key id no JWKS publishes: looking it up when no keys are held makes the
// JWKS client refetch through its unknown-kid rate limiter, the one refetch path there is.
const readyProbeKID = "portal-functions-keys-ready-probe"

// KeysReady reports whether tokens signed with the project's keys can verify now, for a health
// check. An HS256-only verifier has nothing to reach; keys already cached count even while the
// JWKS endpoint is down (they keep verifying). With none cached it asks the endpoint once,
// through the unknown-kid rate limiter, so a health probe polled in a loop cannot hammer
// Supabase; while that fails it returns ErrNoSigningKeys.
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
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNoSigningKeys
	}
	return nil
}

func (v *Verifier) cachedKeys(ctx context.Context) (int, error) {
	keys, err := v.jwks.Storage().KeyReadAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("read cached JWKS keys: %w", err)
	}
	return len(keys), nil
}
