package crm

import (
	"fmt"

	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// PushConfig is crm-push's environment.
type PushConfig struct {
	// HubSpotAccessToken is the private app's token (scopes crm.objects.contacts.write and
	// crm.objects.companies.write).
	HubSpotAccessToken config.Secret `env:"HUBSPOT_ACCESS_TOKEN" required:"true"`
	// HubSpotBaseURL is HubSpot's API root; the local stand-in's URL in development.
	HubSpotBaseURL string `env:"HUBSPOT_BASE_URL" default:"https://api.hubapi.com"`
	// AlertWebhookURL receives failure alerts (Slack incoming webhook); optional. It is a
	// credential (anyone holding it can post), so it is a Secret.
	AlertWebhookURL config.Secret `env:"ALERT_WEBHOOK_URL"`
}

// NewWorkers builds crm-push's workers from its dependencies and environment (the HubSpot
// client of cfg, projections read from deps.Pool): the Lambda handler and the dev server build
// them the same way, as they do helpdesk.NewWorkers.
func NewWorkers(deps function.Deps, cfg PushConfig) (*river.Workers, error) {
	if !cfg.HubSpotAccessToken.IsSet() {
		return nil, fmt.Errorf("crm workers: %w", hubspot.ErrNoAccessToken)
	}
	client := hubspot.New(hubspot.Config{
		BaseURL:     cfg.HubSpotBaseURL,
		AccessToken: cfg.HubSpotAccessToken.Reveal(),
		HTTPClient:  deps.HTTPClient,
	})
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, NewWorker(deps.Pool, client, deps.Logger)); err != nil {
		return nil, fmt.Errorf("register crm worker: %w", err)
	}
	return workers, nil
}

// Push is crm-push's queue: the crm queue worked by NewWorkers.
var Push = jobs.QueueFunction[PushConfig]{
	Name:            "crm-push",
	Queue:           jobs.QueueCRM,
	Workers:         NewWorkers,
	AlertWebhookURL: func(cfg PushConfig) config.Secret { return cfg.AlertWebhookURL },
}

// PushFunction is crm-push: on its schedule (EventBridge, every minute) or a manual invoke, it
// works the crm queue until nothing is due or the invocation's time is nearly up, and answers
// what it did.
var PushFunction = Push.Function()
