package auth

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"
)

// Identity is a verified Supabase user, as its access token describes them. It is only ever
// built by the Verifier from a token whose signature and claims checked out.
type Identity struct {
	UserID      uuid.UUID      // sub
	Email       string         // email
	Role        string         // role: "authenticated", "anon", "service_role"
	AAL         string         // aal: "aal1" or "aal2"
	SessionID   string         // session_id
	IsAnonymous bool           // is_anonymous
	AppMetadata map[string]any // app_metadata (set by the server, safe to trust)
	// Claims is the token's verified payload, exactly as signed: reads as the user pass it to
	// Postgres as request.jwt.claims, as PostgREST does.
	Claims json.RawMessage
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the auth middleware verified for this request.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
