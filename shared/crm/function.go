package crm

import (
	"context"

	"github.com/aws/aws-lambda-go/events"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// PushConfig is crm-push's environment.
type PushConfig struct {
	// HubSpotAccessToken is the private app's token (scopes crm.objects.contacts.write).
	HubSpotAccessToken config.Secret `env:"HUBSPOT_ACCESS_TOKEN" required:"true"`
	// HubSpotBaseURL is HubSpot's API root; the local stand-in's URL in development.
	HubSpotBaseURL string `env:"HUBSPOT_BASE_URL" default:"https://api.hubapi.com"`
	// AlertWebhookURL receives failure alerts (Slack incoming webhook); optional. It is a
	// credential (anyone holding it can post), so it is a Secret.
	AlertWebhookURL config.Secret `env:"ALERT_WEBHOOK_URL"`
}

// PushRunConfig is the queue run of crm-push built from its dependencies: the Lambda handler
// runs it once per invocation, the dev server runs it back to back with jobs.RunContinuously.
func PushRunConfig(deps function.Deps, cfg PushConfig) jobs.RunConfig {
	client := hubspot.New(hubspot.Config{
		BaseURL:     cfg.HubSpotBaseURL,
		AccessToken: cfg.HubSpotAccessToken.Reveal(),
		HTTPClient:  deps.HTTPClient,
	})
	return jobs.RunConfig{
		Queue:           jobs.QueueCRM,
		Workers:         NewWorkers(deps.Pool, client, deps.Logger),
		Logger:          deps.Logger,
		Metrics:         deps.Metrics,
		AlertWebhookURL: cfg.AlertWebhookURL.Reveal(),
		HTTPClient:      deps.HTTPClient,
	}
}

// PushFunction is crm-push: on its schedule (EventBridge, every minute) or a manual invoke, it
// works the crm queue until nothing is due or the invocation's time is nearly up, and answers
// what it did.
var PushFunction = function.Invoked[PushConfig, events.EventBridgeEvent, jobs.Summary]{
	Name: "crm-push",
	Build: func(_ context.Context, deps function.Deps, cfg PushConfig) (func(context.Context, events.EventBridgeEvent) (jobs.Summary, error), error) {
		run := PushRunConfig(deps, cfg)
		return func(ctx context.Context, _ events.EventBridgeEvent) (jobs.Summary, error) {
			return jobs.Run(ctx, deps.Pool, run)
		}, nil
	},
}
