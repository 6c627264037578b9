package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/ticket"
)

// setupEnv is what `reconcile setup` reads: each provider's credentials (a provider whose are
// missing is reported, not skipped silently).
type setupEnv struct {
	HubSpotToken  config.Secret `env:"HUBSPOT_ACCESS_TOKEN"`
	HubSpotBase   string        `env:"HUBSPOT_BASE_URL"`
	SupabaseURL   string        `env:"SUPABASE_URL"`
	ServiceKey    config.Secret `env:"SUPABASE_SERVICE_ROLE_KEY"`
	Bucket        string        `env:"STORAGE_BUCKET" default:"ticket-attachments"`
	StripeAPIKey  config.Secret `env:"STRIPE_API_KEY"`
	StripeAPIBase string        `env:"STRIPE_API_BASE"`
}

// Setup step states.
const (
	stateOK      = "ok"
	stateChange  = "change"  // setup makes it (dry run: would make it)
	stateChanged = "changed" // made by this --apply run
	stateFix     = "FIX"     // a person must act; the step says how
	stateFailed  = "FAILED"  // the provider could not be asked or refused the change
)

// step is one thing setup checked, and what became of it.
type step struct {
	Provider, Target, State, Detail string
}

// setup checks (and with apply, creates) what the functions expect of each provider:
// the portal_* HubSpot properties, the attachments bucket, and the Stripe endpoint.
func (c cli) setup(ctx context.Context, args []string) int {
	fs := c.flags("setup")
	var apply bool
	var webhookURL string
	fs.BoolVar(&apply, "apply", false, "make the changes (default: dry run)")
	fs.StringVar(&webhookURL, "webhook-url", "", "the StripeWebhookUrl output (default: any endpoint ending in /v1/webhooks/stripe)")
	if !c.parse(fs, args) {
		return exitRefused
	}
	var e setupEnv
	if err := config.LoadFrom(c.lookup, &e); err != nil {
		return c.fail(err)
	}
	hc := &http.Client{Timeout: 20 * time.Second}
	var steps []step
	steps = append(steps, setupHubSpot(ctx, e, hc, apply)...)
	steps = append(steps, setupBucket(ctx, e, apply)...)
	steps = append(steps, checkStripe(ctx, e, hc, webhookURL)...)
	return writeSetup(c.stdout, steps, apply)
}

func writeSetup(w io.Writer, steps []step, apply bool) int {
	var b strings.Builder
	if !apply {
		b.WriteString("DRY RUN: nothing changed; run with --apply to make the changes marked 'change'\n\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	counts := map[string]int{}
	for _, s := range steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Provider, s.Target, s.State, s.Detail)
		counts[s.State]++
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nok %d, change %d, changed %d, fix by hand %d, failed %d\n",
		counts[stateOK], counts[stateChange], counts[stateChanged], counts[stateFix], counts[stateFailed])
	code := exitOK
	if counts[stateFix]+counts[stateFailed] > 0 {
		b.WriteString("ATTENTION: the steps marked FIX or FAILED need a person (each says what to do)\n")
		code = exitAttention
	}
	_, _ = io.WriteString(w, b.String())
	return code
}

// setupHubSpot makes sure the Portal property group and every crm.CustomProperties entry
// exist on the objects that carry them, as single-line text (unique where records are
// upserted by it).
func setupHubSpot(ctx context.Context, e setupEnv, hc *http.Client, apply bool) []step {
	if e.HubSpotToken.Reveal() == "" {
		return []step{{"hubspot", "properties", stateFix, "HUBSPOT_ACCESS_TOKEN is not set: set it to check the portal_* properties"}}
	}
	hs := hubspot.New(hubspot.Config{BaseURL: e.HubSpotBase, AccessToken: e.HubSpotToken.Reveal(), HTTPClient: hc})
	var steps []step
	for _, object := range []string{crm.ObjectContacts, crm.ObjectCompanies} {
		if !slices.ContainsFunc(crm.CustomProperties, func(cp crm.CustomProperty) bool { return slices.Contains(cp.Objects, object) }) {
			continue // no portal_* property on this object type (contacts carry none): no group either
		}
		target := object + " group " + crm.PropertyGroup
		_, found, err := hs.GetPropertyGroup(ctx, object, crm.PropertyGroup)
		switch {
		case err != nil:
			steps = append(steps, step{"hubspot", target, stateFailed, err.Error()})
			continue
		case found:
			steps = append(steps, step{"hubspot", target, stateOK, ""})
		case !apply:
			steps = append(steps, step{"hubspot", target, stateChange, "create the property group"})
		default:
			if err := hs.CreatePropertyGroup(ctx, object, hubspot.PropertyGroup{Name: crm.PropertyGroup, Label: "Portal", DisplayOrder: -1}); err != nil {
				steps = append(steps, step{"hubspot", target, stateFailed, err.Error()})
				continue
			}
			steps = append(steps, step{"hubspot", target, stateChanged, "created the property group"})
		}
		for _, cp := range crm.CustomProperties {
			if !slices.Contains(cp.Objects, object) {
				continue
			}
			steps = append(steps, setupProperty(ctx, hs, object, cp, apply))
		}
	}
	return steps
}

func setupProperty(ctx context.Context, hs *hubspot.Client, object string, cp crm.CustomProperty, apply bool) step {
	target := object + " property " + cp.Name
	unique := cp.UniqueOn == object
	want := "single-line text"
	if unique {
		want += " with unique values"
	}
	got, found, err := hs.GetProperty(ctx, object, cp.Name)
	switch {
	case err != nil:
		return step{"hubspot", target, stateFailed, err.Error()}
	case found && (got.Type != "string" || unique && !got.HasUniqueValue):
		return step{"hubspot", target, stateFix, fmt.Sprintf("exists as type %q, unique values %t; want %s. HubSpot cannot change that in place: "+
			"archive the property in Settings > Properties, then run setup --apply again", got.Type, got.HasUniqueValue, want)}
	case found:
		return step{"hubspot", target, stateOK, ""}
	case !apply:
		return step{"hubspot", target, stateChange, "create it (" + want + ", group " + crm.PropertyGroup + ")"}
	}
	p := hubspot.Property{Name: cp.Name, Label: cp.Label, Type: "string", FieldType: "text", GroupName: crm.PropertyGroup,
		HasUniqueValue: unique, Description: "Written by portal-functions (crm-push); do not edit by hand."}
	if err := hs.CreateProperty(ctx, object, p); err != nil {
		return step{"hubspot", target, stateFailed, err.Error()}
	}
	return step{"hubspot", target, stateChanged, "created (" + want + ")"}
}

// setupBucket makes sure the attachments bucket exists, private, with ticket's size limit and
// content types.
func setupBucket(ctx context.Context, e setupEnv, apply bool) []step {
	target := "bucket " + e.Bucket
	if e.SupabaseURL == "" || e.ServiceKey.Reveal() == "" {
		return []step{{"storage", target, stateFix, "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are not set: set them to check the bucket"}}
	}
	sc, err := storage.New(storage.Config{SupabaseURL: e.SupabaseURL, ServiceRoleKey: e.ServiceKey, Bucket: e.Bucket, Timeout: 20 * time.Second})
	if err != nil {
		return []step{{"storage", target, stateFailed, err.Error()}}
	}
	size, types := ticket.AttachmentLimits()
	want := storage.Bucket{Public: false, FileSizeLimit: &size, AllowedMimeTypes: types}
	describe := fmt.Sprintf("private, file size limit %d bytes, %d MIME types", size, len(types))
	got, found, err := sc.GetBucket(ctx)
	if err != nil {
		return []step{{"storage", target, stateFailed, err.Error()}}
	}
	if !found {
		if !apply {
			return []step{{"storage", target, stateChange, "create it (" + describe + ")"}}
		}
		if err := sc.CreateBucket(ctx, want); err != nil {
			return []step{{"storage", target, stateFailed, err.Error()}}
		}
		return []step{{"storage", target, stateChanged, "created (" + describe + ")"}}
	}
	var diffs []string
	if got.Public {
		diffs = append(diffs, "public -> private")
	}
	if got.FileSizeLimit == nil || *got.FileSizeLimit != size {
		was := "none"
		if got.FileSizeLimit != nil {
			was = fmt.Sprint(*got.FileSizeLimit)
		}
		diffs = append(diffs, fmt.Sprintf("file size limit %s -> %d", was, size))
	}
	have, need := slices.Sorted(slices.Values(got.AllowedMimeTypes)), slices.Sorted(slices.Values(types))
	if !slices.Equal(have, need) {
		diffs = append(diffs, fmt.Sprintf("allowed MIME types %v -> %v", have, need))
	}
	switch {
	case len(diffs) == 0:
		return []step{{"storage", target, stateOK, describe}}
	case !apply:
		return []step{{"storage", target, stateChange, "update: " + strings.Join(diffs, "; ")}}
	}
	if err := sc.UpdateBucket(ctx, want); err != nil {
		return []step{{"storage", target, stateFailed, err.Error()}}
	}
	return []step{{"storage", target, stateChanged, "updated: " + strings.Join(diffs, "; ")}}
}

// checkStripe reads the webhook endpoints and says what to fix on ours: Stripe fixes an
// endpoint's API version at creation, so setup never changes it, only says how.
func checkStripe(ctx context.Context, e setupEnv, hc *http.Client, webhookURL string) []step {
	if e.StripeAPIKey.Reveal() == "" {
		return []step{{"stripe", "webhook endpoint", stateFix, "STRIPE_API_KEY is not set: set it (a key that can read webhook endpoints) to check the endpoint"}}
	}
	endpoints, err := billing.NewStripeClient(e.StripeAPIKey, e.StripeAPIBase, hc).WebhookEndpoints(ctx)
	if err != nil {
		return []step{{"stripe", "webhook endpoints", stateFailed, err.Error()}}
	}
	create := fmt.Sprintf("stripe webhook_endpoints create --url %s --api-version %s%s", cmp.Or(webhookURL, "<StripeWebhookUrl output>"),
		billing.APIVersion, eventFlags(billing.HandledTypes))
	var steps []step
	for _, we := range endpoints {
		if !ours(we.URL, webhookURL) {
			continue
		}
		target := "webhook endpoint " + we.ID
		var fixes []string
		if we.Status != "enabled" {
			fixes = append(fixes, fmt.Sprintf("it is %s: enable it (stripe webhook_endpoints update %s --disabled=false)", we.Status, we.ID))
		}
		if we.APIVersion != billing.APIVersion {
			fixes = append(fixes, fmt.Sprintf("API version %q, want %s (stripe-go v76): Stripe cannot change it; create a new endpoint (%s), "+
				"put its signing secret in StripeWebhookSecret, then delete %s", we.APIVersion, billing.APIVersion, create, we.ID))
		}
		if missing := missingEvents(we.EnabledEvents); len(missing) > 0 {
			fixes = append(fixes, fmt.Sprintf("events not enabled: %s (stripe webhook_endpoints update %s%s)",
				strings.Join(missing, ", "), we.ID, eventFlags(append(slices.Clone(we.EnabledEvents), missing...))))
		}
		if len(fixes) == 0 {
			steps = append(steps, step{"stripe", target, stateOK, we.URL})
			continue
		}
		for _, f := range fixes {
			steps = append(steps, step{"stripe", target, stateFix, f})
		}
	}
	if len(steps) == 0 {
		steps = append(steps, step{"stripe", "webhook endpoint", stateFix, "none found for " +
			cmp.Or(webhookURL, "*/v1/webhooks/stripe") + ": create it (" + create + ") and put its signing secret in StripeWebhookSecret"})
	}
	return steps
}

// ours reports whether an endpoint URL is the webhook's: the given URL, or by default any
// whose path is the webhook route.
func ours(endpoint, want string) bool {
	if want != "" {
		return strings.TrimRight(endpoint, "/") == strings.TrimRight(want, "/")
	}
	u, err := url.Parse(endpoint)
	return err == nil && strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1/webhooks/stripe")
}

// missingEvents are the handled event types an endpoint does not send ("*" sends all).
func missingEvents(enabled []string) []string {
	if slices.Contains(enabled, "*") {
		return nil
	}
	var out []string
	for _, t := range billing.HandledTypes {
		if !slices.Contains(enabled, t) {
			out = append(out, t)
		}
	}
	return out
}

func eventFlags(events []string) string {
	var b strings.Builder
	for _, ev := range events {
		b.WriteString(" --enabled-events " + ev)
	}
	return b.String()
}
