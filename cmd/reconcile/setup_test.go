package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/ticket"
)

// stripeMockEndpoint is the webhook endpoint stripe-mock lists (its fixture): API version
// unset, two charge events enabled.
const (
	stripeMockEndpoint    = "https://example.com/my/webhook/endpoint"
	stripeMockEndpointID  = "we_1Pgc6yB7WZ01zgkWzAudq4eU"
	setupTestServiceKey   = "setup-test-service-key"
	setupTestStripeAPIKey = "sk_test_setup"
)

type setupBundle struct {
	hubspot *hubspotfake.Server
	storage *storagefake.TestServer
	env     map[string]string
}

func newSetupBundle(t *testing.T) setupBundle {
	t.Helper()
	b := setupBundle{hubspot: hubspotfake.NewTest(t), storage: storagefake.NewTest(t, setupTestServiceKey)}
	b.env = map[string]string{
		"HUBSPOT_ACCESS_TOKEN": b.hubspot.AccessToken(), "HUBSPOT_BASE_URL": b.hubspot.URL(),
		"SUPABASE_URL": b.storage.URL(), "SUPABASE_SERVICE_ROLE_KEY": setupTestServiceKey,
		"STRIPE_API_KEY": setupTestStripeAPIKey, "STRIPE_API_BASE": stripemock.Start(t),
	}
	return b
}

func (b setupBundle) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"setup"}, args...), &out, &errOut, func(k string) (string, bool) {
		v, ok := b.env[k]
		return v, ok
	})
	return code, out.String(), errOut.String()
}

// lines keeps the output lines about one provider and state.
func lines(out, provider, state string) []string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == provider && strings.Contains(l, "  "+state) {
			keep = append(keep, l)
		}
	}
	return keep
}

// A new HubSpot portal and a bucket made by hand with the wrong settings: the dry run lists
// every change and makes none; --apply makes them; a second --apply changes nothing. What
// only a person can fix (a property of the wrong type, the Stripe endpoint's API version and
// events) is reported with how, every time, and makes the exit status 1.
func TestSetupCreatesWhatIsMissingOnceAndSaysWhatToFix(t *testing.T) {
	t.Parallel()
	b := newSetupBundle(t)
	limit := int64(5 << 20)
	b.storage.PutBucket(storagefake.Bucket{ID: "ticket-attachments", Name: "ticket-attachments", Public: true, FileSizeLimit: &limit})
	b.hubspot.PutProperty(crm.ObjectCompanies, hubspotfake.Property{Name: crm.PropPeriodEnd, Label: "x", Type: "date", FieldType: "date", GroupName: "companyinformation"})

	code, out, errOut := b.run(t, "--webhook-url", stripeMockEndpoint)
	require.Equal(t, exitAttention, code, errOut)
	require.Contains(t, out, "DRY RUN")
	// The companies' group and four company properties (one exists, of the wrong type); contacts
	// carry no portal_* property.
	require.Len(t, lines(out, "hubspot", "change"), 1+4, out)
	require.Len(t, lines(out, "storage", "change"), 1, out)
	require.Contains(t, out, "public -> private; file size limit 5242880 -> 10485760")
	_, ok := b.hubspot.Property(crm.ObjectCompanies, crm.PropPlan)
	require.False(t, ok, "a dry run changes nothing")
	bucket, _ := b.storage.Bucket("ticket-attachments")
	require.True(t, bucket.Public)

	fixes := func(out string) []string {
		return append(lines(out, "hubspot", "FIX"), lines(out, "stripe", "FIX")...)
	}
	require.Len(t, fixes(out), 3, out)
	require.Regexp(t, `companies property portal_current_period_end +FIX +exists as type "date"`, out)
	require.Contains(t, out, `API version "", want 2023-10-16`)
	require.Contains(t, out, "stripe webhook_endpoints create --url "+stripeMockEndpoint+" --api-version 2023-10-16 --enabled-events checkout.session.completed")
	require.Contains(t, out, "events not enabled: checkout.session.completed, customer.subscription.created")
	require.Contains(t, out, "stripe webhook_endpoints update "+stripeMockEndpointID+" --enabled-events charge.failed --enabled-events charge.succeeded --enabled-events checkout.session.completed")

	code, out, errOut = b.run(t, "--apply", "--webhook-url", stripeMockEndpoint)
	require.Equal(t, exitAttention, code, errOut)
	require.Len(t, lines(out, "hubspot", "changed"), 1+4, out)
	require.Len(t, lines(out, "storage", "changed"), 1, out)
	tenant, ok := b.hubspot.Property(crm.ObjectCompanies, crm.PropTenantID)
	require.True(t, ok)
	require.True(t, tenant.HasUniqueValue, "companies are upserted by portal_tenant_id")
	require.Equal(t, crm.PropertyGroup, tenant.GroupName)
	_, ok = b.hubspot.Property(crm.ObjectContacts, crm.PropTenantID)
	require.False(t, ok, "contacts carry nothing tenant-specific")
	size, types := ticket.AttachmentLimits()
	bucket, _ = b.storage.Bucket("ticket-attachments")
	require.False(t, bucket.Public)
	require.Equal(t, size, *bucket.FileSizeLimit)
	require.ElementsMatch(t, types, bucket.AllowedMimeTypes)

	code, out, _ = b.run(t, "--apply", "--webhook-url", stripeMockEndpoint)
	require.Equal(t, exitAttention, code)
	require.Empty(t, lines(out, "hubspot", "change"), "idempotent: "+out)
	require.Empty(t, lines(out, "storage", "change"), out)
	require.Len(t, fixes(out), 3, "what needs a person is said again")
	require.Contains(t, out, "ok 6, change 0, changed 0, fix by hand 3, failed 0")
}

// A missing bucket is created; without a provider's credentials, setup says which to set
// instead of passing silently; an unreachable provider is a failure, not an ok.
func TestSetupCreatesTheBucketAndNamesMissingCredentials(t *testing.T) {
	t.Parallel()
	b := newSetupBundle(t)
	delete(b.env, "HUBSPOT_ACCESS_TOKEN")
	b.env["STRIPE_API_BASE"] = "http://127.0.0.1:1"
	code, out, _ := b.run(t, "--apply")
	require.Equal(t, exitAttention, code)
	require.Contains(t, out, "HUBSPOT_ACCESS_TOKEN is not set")
	require.Len(t, lines(out, "storage", "changed"), 1, out)
	require.Len(t, lines(out, "stripe", "FAILED"), 1, out)
	_, ok := b.storage.Bucket("ticket-attachments")
	require.True(t, ok)
}
