// Package auth verifies Supabase access tokens and carries the verified identity of a request.
//
// Weak auth checks are one of the root causes this project exists to remove, so every portal
// function trusts a caller only through this package: a Verifier checks a token's signature
// (the project's legacy HS256 secret, or its ES256/RS256 signing keys from the project's JWKS),
// its expiry, issuer, audience and algorithm against an explicit allow-list, and Require turns
// that into HTTP middleware that answers 401/403 as problem+json and puts the Identity in the
// request's context. The key is chosen by the token's algorithm, never by what the token says
// about itself alone: HS256 is only ever checked against the shared secret and ES256/RS256 only
// against public keys from the JWKS, so neither can be confused for the other.
//
// MintHS256 signs local-development tokens (the dev server and `make events`); tests use the
// authtest package, which serves a real JWKS.
package auth
