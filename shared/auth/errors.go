package auth

import "errors"

// Why a token was refused. Verify wraps each in a *TokenError, so errors.Is(err, ErrExpired)
// works; the middleware logs the reason and tells the caller only that the token is invalid.
var (
	// ErrMissingToken is a request without a token (no Authorization header, or an empty one).
	ErrMissingToken = errors.New("missing token")
	// ErrMalformedToken is something that is not a compact JWS, or not a Bearer credential.
	ErrMalformedToken = errors.New("malformed token")
	// ErrAlgorithmNotAllowed is a token whose alg is not on the allow-list ("none", HS256 when
	// no secret is configured, anything we do not support).
	ErrAlgorithmNotAllowed = errors.New("algorithm not allowed")
	// ErrUnknownKey is an ES256/RS256 token whose kid is missing, or names no key of the
	// token's algorithm in the JWKS, even after the rate-limited refetch.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrInvalidSignature is a token whose signature does not match its key: forged, tampered
	// with, or signed with another project's key.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrExpired is a token past its exp (plus the leeway).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid is a token before its nbf, or issued in the future (beyond the leeway).
	ErrNotYetValid = errors.New("token not valid yet")
	// ErrWrongIssuer is a token that another issuer (another Supabase project) signed.
	ErrWrongIssuer = errors.New("wrong issuer")
	// ErrWrongAudience is a token not meant for signed-in users (aud is not "authenticated").
	ErrWrongAudience = errors.New("wrong audience")
	// ErrInvalidClaims is a correctly signed token whose claims do not describe a user: a
	// required claim missing (exp, iss, aud), or a sub that is not a UUID.
	ErrInvalidClaims = errors.New("invalid claims")
	// ErrWrongRole is a valid token whose role is not "authenticated" (anon, service_role):
	// Require refuses it with 401.
	ErrWrongRole = errors.New("role not allowed")
	// ErrAnonymous is a valid token of a Supabase anonymous user: Require refuses it with 403
	// unless the route allows anonymous users.
	ErrAnonymous = errors.New("anonymous user")
	// ErrInvalidConfig is a Config NewVerifier cannot work with.
	ErrInvalidConfig = errors.New("invalid auth config")
	// ErrNoSigningKeys is a verifier that holds no JWKS key and cannot get one now (the JWKS
	// is unreachable, or empty while no legacy secret is set): KeysReady reports it to the
	// health check.
	ErrNoSigningKeys = errors.New("no signing keys: none cached, and the JWKS is unreachable or empty without a legacy secret")
)

// TokenError is a refused token: Reason is one of the ErrX values above (what to log and to
// branch on), Cause the library's detail (for the log only). A named type so a Lambda error
// report says TokenError, not errorString.
type TokenError struct {
	Reason error
	Cause  error
}

// Error says the reason and, when there is one, the underlying cause.
func (e *TokenError) Error() string {
	if e.Cause == nil {
		return "verify token: " + e.Reason.Error()
	}
	return "verify token: " + e.Reason.Error() + ": " + e.Cause.Error()
}

// Unwrap exposes both the reason and the cause to errors.Is and errors.As.
func (e *TokenError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Cause}
}

func refuse(reason, cause error) *TokenError {
	return &TokenError{Reason: reason, Cause: cause}
}
