package helpdesk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/zendesk"
)

// Config is what support-push reads from the environment (DESIGN.md section 8). Storage is
// optional: without SUPABASE_SERVICE_ROLE_KEY the tickets still go out, their attachments
// listed without links (a warning is logged at start).
type Config struct {
	ZendeskBaseURL  string        `env:"ZENDESK_BASE_URL" required:"true"`
	ZendeskEmail    string        `env:"ZENDESK_EMAIL" required:"true"`
	ZendeskAPIToken config.Secret `env:"ZENDESK_API_TOKEN" required:"true"`
	ZendeskTimeout  time.Duration `env:"ZENDESK_TIMEOUT" default:"10s"`
	SupabaseURL     string        `env:"SUPABASE_URL"`
	ServiceRoleKey  config.Secret `env:"SUPABASE_SERVICE_ROLE_KEY"`
	Bucket          string        `env:"STORAGE_BUCKET" default:"ticket-attachments"`
	AlertWebhookURL config.Secret `env:"ALERT_WEBHOOK_URL"`
}

// NewWorkers builds the helpdesk queue's workers from cfg: the dev server registers them in
// its continuous runner, support-push in its scheduled one.
func NewWorkers(deps function.Deps, cfg Config) (*river.Workers, error) {
	zc := zendesk.Config{BaseURL: cfg.ZendeskBaseURL, Email: cfg.ZendeskEmail, APIToken: cfg.ZendeskAPIToken.Reveal(),
		HTTPClient: deps.HTTPClient, Timeout: cfg.ZendeskTimeout}
	if err := zc.Validate(); err != nil {
		return nil, fmt.Errorf("zendesk client: %w", err)
	}
	var files DownloadSigner = noLinks{}
	if cfg.ServiceRoleKey.IsSet() && cfg.SupabaseURL != "" {
		st, err := storage.New(storage.Config{SupabaseURL: cfg.SupabaseURL, ServiceRoleKey: cfg.ServiceRoleKey, Bucket: cfg.Bucket})
		if err != nil {
			return nil, fmt.Errorf("storage client: %w", err)
		}
		files = st
	} else if deps.Logger != nil {
		deps.Logger.Warn("SUPABASE_URL or SUPABASE_SERVICE_ROLE_KEY not set: Zendesk tickets will list attachments without links")
	}
	p := NewPusher(deps.Pool, zendesk.New(zc), files, Options{
		IsMissing: func(err error) bool { return errors.Is(err, storage.ErrNotFound) || errors.Is(err, errNoLinks) },
	})
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, NewWorker(p)); err != nil {
		return nil, fmt.Errorf("register helpdesk worker: %w", err)
	}
	return workers, nil
}

// Push is support-push's queue: the helpdesk queue worked by NewWorkers.
var Push = jobs.QueueFunction[Config]{
	Name:            "support-push",
	Queue:           jobs.QueueHelpdesk,
	Workers:         NewWorkers,
	AlertWebhookURL: func(cfg Config) config.Secret { return cfg.AlertWebhookURL },
}

// PushFunction is support-push (SupportPushFunction): every scheduled event works the helpdesk
// queue until nothing is due or the invocation's time is nearly up, and reports what it did.
var PushFunction = Push.Function()

var errNoLinks = errors.New("helpdesk: storage not configured")

// noLinks is the DownloadSigner when Storage is not configured: every attachment is listed
// without a link.
type noLinks struct{}

func (noLinks) SignDownload(context.Context, string, time.Duration) (string, error) {
	return "", errNoLinks
}

var (
	_ DownloadSigner = (*storage.Client)(nil)
	_ DownloadSigner = noLinks{}
)
