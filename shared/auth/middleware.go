package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Details the caller sees. Deliberately generic: telling a caller why its token failed helps an
// attacker more than a client (a client's only move is to refresh its session either way).
const (
	detailInvalidToken = "a valid access token for a signed-in user is required"
	detailAnonymous    = "this action needs a permanent account; sign in or link an identity to your anonymous session"
)

// Option changes what Require lets through.
type Option func(*requireOptions)

type requireOptions struct {
	allowAnonymous bool
}

// AllowAnonymous lets Supabase anonymous users (is_anonymous = true) through. Portal functions
// refuse them by default: an anonymous session can be created by anyone, in bulk.
func AllowAnonymous() Option {
	return func(o *requireOptions) { o.allowAnonymous = true }
}

// Require is middleware for routes only a signed-in user may call. It reads
// `Authorization: Bearer <token>`, verifies the token with v and puts the Identity in the
// request's context (FromContext) and a hash of the user id on the request's log line.
//
// It answers, as problem+json:
//   - 401 with `WWW-Authenticate: Bearer error="invalid_token"` for a missing, malformed,
//     expired or wrongly signed token, and for a token whose role is not "authenticated"
//     (the anon and service_role API keys, or a token minted for another role): such a token
//     does not identify a signed-in user at all, so the credential itself is the wrong one
//     and the fix is to sign in;
//   - 403 for an anonymous user (unless AllowAnonymous): the credential is valid and names
//     a real user, and signing in again with it would not help; the user lacks a permanent
//     account, which is a permission, not an authentication, problem.
//
// The reason for a refusal goes to the request's log, never to the caller.
func Require(v *Verifier, opts ...Option) func(http.Handler) http.Handler {
	var o requireOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			id, err := authenticate(r, v)
			if err == nil && id.Role != RoleAuthenticated {
				err = refuse(ErrWrongRole, fmt.Errorf("role %q", id.Role))
			}
			if err != nil {
				logRefusal(r, err)
				web.Error(w, r, problem.Unauthorized(detailInvalidToken).WithCause(err))
				return
			}
			web.AddLogAttrs(ctx, slog.String("user", telemetry.HashUser(id.UserID.String())))
			if id.IsAnonymous && !o.allowAnonymous {
				err = refuse(ErrAnonymous, nil)
				logRefusal(r, err)
				web.Error(w, r, problem.Forbidden(detailAnonymous).WithCause(err))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithIdentity(ctx, id)))
		})
	}
}

func authenticate(r *http.Request, v *Verifier) (Identity, error) {
	token, err := BearerToken(r)
	if err != nil {
		return Identity{}, err
	}
	return v.Verify(r.Context(), token)
}

// BearerToken returns the token of an `Authorization: Bearer <token>` header (RFC 6750; the
// scheme is case-insensitive). The error is a *TokenError: ErrMissingToken without the header,
// ErrMalformedToken for another scheme or a malformed header.
func BearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0 || values[0] == "":
		return "", refuse(ErrMissingToken, nil)
	case len(values) > 1:
		return "", refuse(ErrMalformedToken, errors.New("more than one Authorization header"))
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", refuse(ErrMalformedToken, errors.New("authorization scheme is not Bearer"))
	}
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", refuse(ErrMalformedToken, errors.New("malformed Bearer credential"))
	}
	return token, nil
}

func logRefusal(r *http.Request, err error) {
	reason := "invalid token"
	var te *TokenError
	if errors.As(err, &te) {
		reason = te.Reason.Error()
	}
	web.AddLogAttrs(r.Context(), slog.String("auth_refused", reason))
	web.Logger(r.Context()).LogAttrs(r.Context(), slog.LevelInfo, "access token refused",
		slog.String("reason", reason), slog.String("error", err.Error()))
}
