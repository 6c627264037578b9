package ticket

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/nudge"
	"github.com/portal-functions/portal-functions/shared/storage"
)

// Config is what ticket-create reads from the environment (DESIGN.md section 8).
type Config struct {
	SupabaseURL    string        `env:"SUPABASE_URL" required:"true"`
	JWTSecret      config.Secret `env:"SUPABASE_JWT_SECRET"`
	ServiceRoleKey config.Secret `env:"SUPABASE_SERVICE_ROLE_KEY" required:"true"`
	Bucket         string        `env:"STORAGE_BUCKET" default:"ticket-attachments"`
	// StorageTimeout bounds each Storage call; SignTimeout bounds them all for one request.
	StorageTimeout time.Duration `env:"STORAGE_TIMEOUT" default:"3s"`
}

// CreateFunction is ticket-create (TicketCreateFunction, POST /v1/tickets), as Lambda and the
// dev server build it.
var CreateFunction = function.HTTP[Config]{
	Name: "ticket-create",
	Build: func(ctx context.Context, deps function.Deps, cfg Config) (http.Handler, error) {
		v, err := auth.NewVerifier(ctx, auth.Config{SupabaseURL: cfg.SupabaseURL, JWTSecret: cfg.JWTSecret, Logger: deps.Logger})
		if err != nil {
			return nil, fmt.Errorf("token verifier: %w", err)
		}
		ins, err := jobs.NewInserter(deps.Pool)
		if err != nil {
			return nil, fmt.Errorf("job inserter: %w", err)
		}
		// After a ticket commits, support-push is nudged (when SUPPORT_PUSH_FUNCTION names it).
		supportPush, err := nudge.FromEnv(deps.Lookup, "SUPPORT_PUSH_FUNCTION", deps.HTTPClient, deps.Logger)
		if err != nil {
			return nil, err
		}
		ins.OnInsert(nudge.Mark)
		st, err := storage.New(storage.Config{SupabaseURL: cfg.SupabaseURL, ServiceRoleKey: cfg.ServiceRoleKey,
			Bucket: cfg.Bucket, Timeout: cfg.StorageTimeout})
		if err != nil {
			return nil, fmt.Errorf("storage client: %w", err)
		}
		return nudge.Middleware(supportPush, jobs.QueueHelpdesk)(NewHandler(Deps{
			Pool:        deps.Pool,
			Verifier:    v,
			Idempotency: idempotency.New(deps.Pool),
			Jobs:        ins,
			Uploads:     st,
		})), nil
	},
}

var _ UploadSigner = (*storage.Client)(nil)
var _ Enqueuer = (*jobs.Inserter)(nil)
