package crm

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
)

// TestOneBadRecordFailsAlone sends the records of three jobs in one batch (the batch fills up
// at three, so no timing is involved): HubSpot refuses one contact, and only its job fails;
// two jobs of one tenant share its records, sent once.
func TestOneBadRecordFailsAlone(t *testing.T) {
	t.Parallel()
	fake := hubspotfake.NewTest(t)
	fake.FailEmail("bad@acme.test", http.StatusBadRequest)
	pool := dbtest.New(t)
	b := &batcher{db: pool, hs: hubspot.New(hubspot.Config{BaseURL: fake.URL(), AccessToken: fake.AccessToken()}), window: time.Hour, max: 3}
	good, bad := uuid.New(), uuid.New()
	rec := func(tenant uuid.UUID, email string) record {
		return record{
			tenantID: tenant,
			company:  hubspot.CompanyInput{TenantID: tenant.String(), Properties: map[string]string{PropCompanyName: tenant.String()}},
			contact:  &hubspot.ContactInput{Email: email, Properties: map[string]string{PropPlan: "pro"}},
		}
	}
	recs := []record{rec(good, "good@acme.test"), rec(bad, "bad@acme.test"), rec(good, "Good@acme.test")}
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { errs[i] = b.upsert(context.Background(), r) })
	}
	wg.Wait()

	require.NoError(t, errs[0])
	require.NoError(t, errs[2])
	var he *hubspot.Error
	require.ErrorAs(t, errs[1], &he)
	require.Equal(t, "VALIDATION_ERROR", he.Category)
	require.False(t, he.Retryable())
	require.Equal(t, 3, fake.Calls(), "one companies call, one contacts call and one associations call for the three jobs")
	require.Len(t, fake.Upserts(), 4, "two companies, two contacts: the shared records are sent once")
	_, ok := fake.Contact("good@acme.test")
	require.True(t, ok)
}

// TestSharedEmailInOneBatch: two tenants whose payer typed the same email, in one batch (it
// fills up at two): each company gets its own facts, the contact is upserted once and
// associated with both companies, and both jobs succeed.
func TestSharedEmailInOneBatch(t *testing.T) {
	t.Parallel()
	fake := hubspotfake.NewTest(t)
	b := &batcher{db: dbtest.New(t), hs: hubspot.New(hubspot.Config{BaseURL: fake.URL(), AccessToken: fake.AccessToken()}), window: time.Hour, max: 2}
	a, c := uuid.New(), uuid.New()
	rec := func(tenant uuid.UUID, plan, email string) record {
		return record{
			tenantID: tenant,
			company:  hubspot.CompanyInput{TenantID: tenant.String(), Properties: map[string]string{PropPlan: plan}},
			contact:  &hubspot.ContactInput{Email: email, Properties: map[string]string{PropEmail: email}},
		}
	}
	recs := []record{rec(a, "starter", "shared@acme.test"), rec(c, "pro", "Shared@acme.test")}
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { errs[i] = b.upsert(context.Background(), r) })
	}
	wg.Wait()

	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Equal(t, 3, fake.Calls(), "one call each for companies, contacts and associations")
	for id, plan := range map[uuid.UUID]string{a: "starter", c: "pro"} {
		company, ok := fake.Company(id.String())
		require.True(t, ok)
		require.Equal(t, plan, company.Properties[PropPlan])
	}
	want := []string{a.String(), c.String()}
	slices.Sort(want)
	require.Equal(t, want, fake.CompaniesOf("shared@acme.test"))
}
