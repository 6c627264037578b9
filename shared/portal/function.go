package portal

import (
	"context"
	"fmt"
	"net/http"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
)

// Config is what portal-read reads from the environment (DESIGN.md section 8).
type Config struct {
	SupabaseURL string        `env:"SUPABASE_URL" required:"true"`
	JWTSecret   config.Secret `env:"SUPABASE_JWT_SECRET"`
}

// ReadFunction is portal-read (PortalReadFunction: GET /v1/account, GET /v1/tickets,
// GET /v1/tickets/{id}, GET /v1/health), as Lambda and the dev server build it.
var ReadFunction = function.HTTP[Config]{
	Name: "portal-read",
	Build: func(ctx context.Context, deps function.Deps, cfg Config) (http.Handler, error) {
		v, err := auth.NewVerifier(ctx, auth.Config{SupabaseURL: cfg.SupabaseURL, JWTSecret: cfg.JWTSecret, Logger: deps.Logger})
		if err != nil {
			return nil, fmt.Errorf("token verifier: %w", err)
		}
		return NewHandler(Deps{Pool: deps.Pool, Verifier: v}), nil
	},
}
