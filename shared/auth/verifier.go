package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/portal-functions/portal-functions/shared/config"
)

// Algorithms Supabase signs access tokens with, and so the only ones a Verifier accepts.
const (
	HS256 = "HS256" // the project's legacy shared secret
	ES256 = "ES256" // asymmetric signing keys (Supabase's default)
	RS256 = "RS256" // asymmetric signing keys
)

// Defaults for the zero values of Config.
const (
	DefaultLeeway              = 30 * time.Second
	DefaultJWKSRefresh         = 5 * time.Minute
	MaxJWKSRefresh             = 10 * time.Minute // Supabase caches its JWKS for 10 minutes
	DefaultUnknownKIDRateLimit = time.Minute
	DefaultFetchTimeout        = 5 * time.Second
	// AudienceAuthenticated is the aud of every signed-in user's access token.
	AudienceAuthenticated = "authenticated"
	// RoleAuthenticated is the role of a signed-in user (anon and service_role are API keys).
	RoleAuthenticated = "authenticated"
)

// maxTokenBytes bounds what Verify will parse: a Supabase access token is well under 4 KiB,
// and nothing larger deserves the JSON decoder's time.
const maxTokenBytes = 16 << 10

// Config says whose tokens to trust. Only SupabaseURL is required; the zero value of every
// other field picks the default a Supabase project needs.
type Config struct {
	// SupabaseURL is the project URL (https://<ref>.supabase.co); tokens must carry
	// iss = SupabaseURL + "/auth/v1".
	SupabaseURL string
	// JWTSecret is the project's legacy HS256 secret. Optional: without it HS256 is refused.
	JWTSecret config.Secret
	// JWKSURL is where the project's public signing keys are published
	// (default SupabaseURL + "/auth/v1/.well-known/jwks.json").
	JWKSURL string
	// Algorithms is the allow-list. Default: HS256 when JWTSecret is set, plus ES256 and RS256
	// unless DisableJWKS. Only these three are supported.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat (default 30 s).
	Leeway time.Duration
	// HTTPClient fetches the JWKS (default: a client with FetchTimeout).
	HTTPClient *http.Client
	// JWKSRefresh is how often the JWKS is refetched in the background (default 5 min, at
	// most 10 min so a revoked key stops working as soon as Supabase's own cache lets it).
	JWKSRefresh time.Duration
	// UnknownKIDRateLimit is the least time between two refetches caused by a token whose kid
	// we have not seen (default 1 min), so a flood of forged kids cannot hammer Supabase.
	UnknownKIDRateLimit time.Duration
	// FetchTimeout bounds one JWKS fetch, including the first one in NewVerifier, so a cold
	// start never hangs on an unreachable endpoint (default 5 s).
	FetchTimeout time.Duration
	// DisableJWKS turns asymmetric keys off (HS256 only; JWTSecret is then required).
	DisableJWKS bool
	// Logger receives JWKS refresh failures (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock exp, nbf and iat are checked against (default time.Now; for tests).
	Now func() time.Time
}

// Verifier checks Supabase access tokens. Safe for concurrent use; build one per process and
// share it, so the JWKS cache is shared too.
type Verifier struct {
	parser *jwt.Parser
	now    func() time.Time
	leeway time.Duration
	hs256  verifiedTokens
	secret []byte
	jwks   keyfunc.Keyfunc // nil when JWKS is disabled
	algs   []string
	// jwksReached says whether the last JWKS fetch got a 2xx answer (see KeysReady).
	jwksReached atomic.Bool
}

// IssuerFor is the iss claim of the tokens a project's Auth server issues.
func IssuerFor(supabaseURL string) string {
	return strings.TrimRight(supabaseURL, "/") + "/auth/v1"
}

// NewVerifier builds a Verifier and fetches the JWKS once (bounded by FetchTimeout: when the
// endpoint is down it still returns, HS256 tokens verify, and the keys are fetched on the
// first token that needs them). ctx ends the background refresh.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	v := &Verifier{secret: []byte(cfg.JWTSecret.Reveal()), algs: cfg.Algorithms, now: cfg.Now, leeway: cfg.Leeway}
	v.parser = jwt.NewParser(
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithIssuer(IssuerFor(cfg.SupabaseURL)),
		jwt.WithAudience(AudienceAuthenticated),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		// Canonical base64 only, so one signature has one spelling: a token that verifies is
		// exactly the string that was signed.
		jwt.WithStrictDecoding(),
	)
	if cfg.DisableJWKS {
		return v, nil
	}
	logger := cfg.Logger
	v.jwks, err = keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:      recordFetches(cfg.HTTPClient, &v.jwksReached),
		HTTPTimeout: cfg.FetchTimeout,
		// The unknown-kid refetch shares this bound with its wait for the rate limiter: a
		// token that arrives while the limiter is closed fails at once instead of waiting.
		RateLimitWaitMax:  cfg.FetchTimeout,
		RefreshInterval:   cfg.JWKSRefresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.UnknownKIDRateLimit), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				// Known keys stay in the cache: a refresh that fails replaces nothing.
				logger.WarnContext(ctx, "fetch JWKS failed; keeping the keys already known",
					"url", u, "error", err.Error())
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start JWKS client: %w", err)
	}
	return v, nil
}

func (c Config) withDefaults() (Config, error) {
	invalid := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	c.SupabaseURL = strings.TrimRight(c.SupabaseURL, "/")
	if u, err := url.Parse(c.SupabaseURL); err != nil || u.Scheme == "" || u.Host == "" {
		return invalid("SupabaseURL %q is not an absolute URL", c.SupabaseURL)
	}
	if c.DisableJWKS && !c.JWTSecret.IsSet() {
		return invalid("JWKS is disabled and no JWT secret is set: no token could verify")
	}
	if c.Algorithms == nil {
		if c.JWTSecret.IsSet() {
			c.Algorithms = append(c.Algorithms, HS256)
		}
		if !c.DisableJWKS {
			c.Algorithms = append(c.Algorithms, ES256, RS256)
		}
	}
	if len(c.Algorithms) == 0 {
		return invalid("no algorithm allowed")
	}
	for _, alg := range c.Algorithms {
		switch {
		case alg == HS256 && !c.JWTSecret.IsSet():
			return invalid("HS256 is allowed but no JWT secret is set")
		case (alg == ES256 || alg == RS256) && c.DisableJWKS:
			return invalid("%s is allowed but JWKS is disabled", alg)
		case alg != HS256 && alg != ES256 && alg != RS256:
			return invalid("algorithm %q is not supported (HS256, ES256, RS256)", alg)
		}
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = DefaultJWKSRefresh
	}
	if c.JWKSRefresh < 0 || c.JWKSRefresh > MaxJWKSRefresh {
		return invalid("JWKSRefresh %s is outside (0, %s]", c.JWKSRefresh, MaxJWKSRefresh)
	}
	if c.UnknownKIDRateLimit <= 0 {
		c.UnknownKIDRateLimit = DefaultUnknownKIDRateLimit
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	if c.JWKSURL == "" {
		c.JWKSURL = c.SupabaseURL + "/auth/v1/.well-known/jwks.json"
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.FetchTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// claims is what Verify reads from a Supabase access token.
type claims struct {
	jwt.RegisteredClaims
	Email       string         `json:"email"`
	Role        string         `json:"role"`
	AAL         string         `json:"aal"`
	SessionID   string         `json:"session_id"`
	IsAnonymous bool           `json:"is_anonymous"`
	AppMetadata map[string]any `json:"app_metadata"`
}

// Verify checks token and returns the identity it carries. Every refusal is a *TokenError
// whose Reason is one of the ErrX values. Verify does not judge the role or anonymity: that is
// the caller's policy (see Require).
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, refuse(ErrMissingToken, nil)
	}
	if len(token) > maxTokenBytes {
		return Identity{}, refuse(ErrMalformedToken, fmt.Errorf("token is %d bytes, over %d", len(token), maxTokenBytes))
	}
	now := v.now()
	if id, ok := v.hs256.get(token, now); ok {
		return id, nil
	}
	var c claims
	tok, err := v.parser.ParseWithClaims(token, &c, v.keyFor(ctx))
	if err != nil {
		return Identity{}, v.classify(tok, err)
	}
	userID, err := uuid.Parse(c.Subject)
	if err != nil {
		return Identity{}, refuse(ErrInvalidClaims, fmt.Errorf("sub %q is not a UUID: %w", c.Subject, err))
	}
	// The parser decoded this very segment the same way before checking the signature over
	// it, so these are the signed bytes.
	payload, err := base64.RawURLEncoding.Strict().DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		return Identity{}, refuse(ErrMalformedToken, fmt.Errorf("decode payload: %w", err))
	}
	id := Identity{
		UserID:      userID,
		Email:       c.Email,
		Role:        c.Role,
		AAL:         c.AAL,
		SessionID:   c.SessionID,
		IsAnonymous: c.IsAnonymous,
		AppMetadata: c.AppMetadata,
		Claims:      payload,
	}
	if tok.Method.Alg() == HS256 {
		// exp is required, so ExpiresAt is set; the parser accepted it up to exp + leeway.
		until := c.ExpiresAt.Add(v.leeway)
		if limit := now.Add(verifiedTTL); limit.Before(until) {
			until = limit
		}
		v.hs256.put(token, id, until)
	}
	return id, nil
}

// keyFor picks the key by the token's algorithm, so a key can only ever be used with the
// algorithm family it belongs to: HS256 against the secret, ES256/RS256 against the JWKS.
func (v *Verifier) keyFor(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		switch alg {
		case HS256:
			if len(v.secret) == 0 {
				return nil, refuse(ErrAlgorithmNotAllowed, errors.New("HS256 without a configured secret"))
			}
			return v.secret, nil
		case ES256, RS256:
			if v.jwks == nil {
				return nil, refuse(ErrAlgorithmNotAllowed, fmt.Errorf("%s with JWKS disabled", alg))
			}
			if kid, _ := t.Header["kid"].(string); kid == "" {
				return nil, refuse(ErrUnknownKey, errors.New("no kid in the token header"))
			}
			key, err := v.jwks.KeyfuncCtx(ctx)(t)
			if err != nil {
				return nil, refuse(ErrUnknownKey, fmt.Errorf("look up kid %v: %w", t.Header["kid"], err))
			}
			switch key.(type) {
			case *ecdsa.PublicKey:
				if alg == ES256 {
					return key, nil
				}
			case *rsa.PublicKey:
				if alg == RS256 {
					return key, nil
				}
			}
			return nil, refuse(ErrInvalidSignature, fmt.Errorf("kid %v holds a %T, not a key for %s", t.Header["kid"], key, alg))
		default:
			return nil, refuse(ErrAlgorithmNotAllowed, fmt.Errorf("alg %q", alg))
		}
	}
}

// classify turns golang-jwt's error into one reason. Claims errors can come joined (expired
// and wrong issuer at once); the first match in this order wins.
func (v *Verifier) classify(tok *jwt.Token, err error) *TokenError {
	var te *TokenError
	if errors.As(err, &te) {
		return te // the keyfunc already said why
	}
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return refuse(ErrMalformedToken, err)
	}
	if tok != nil {
		if alg, _ := tok.Header["alg"].(string); !slices.Contains(v.algs, alg) {
			return refuse(ErrAlgorithmNotAllowed, err)
		}
	}
	for _, m := range []struct{ lib, ours error }{
		{jwt.ErrTokenSignatureInvalid, ErrInvalidSignature},
		{jwt.ErrTokenExpired, ErrExpired},
		{jwt.ErrTokenNotValidYet, ErrNotYetValid},
		{jwt.ErrTokenUsedBeforeIssued, ErrNotYetValid},
		{jwt.ErrTokenInvalidIssuer, ErrWrongIssuer},
		{jwt.ErrTokenInvalidAudience, ErrWrongAudience},
	} {
		if errors.Is(err, m.lib) {
			return refuse(m.ours, err)
		}
	}
	return refuse(ErrInvalidClaims, err)
}
