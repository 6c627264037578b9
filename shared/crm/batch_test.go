package crm

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	b := &batcher{hs: hubspot.New(hubspot.Config{BaseURL: fake.URL(), AccessToken: fake.AccessToken()}), window: time.Hour, max: 3}
	rec := func(tenant, email string) record {
		return record{
			company: hubspot.CompanyInput{TenantID: tenant, Properties: map[string]string{PropCompanyName: tenant}},
			contact: &hubspot.ContactInput{Email: email, Properties: map[string]string{PropPlan: "pro"}},
		}
	}
	recs := []record{rec("t-good", "good@acme.test"), rec("t-bad", "bad@acme.test"), rec("t-good", "Good@acme.test")}
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
	require.Equal(t, 2, fake.Calls(), "one companies call and one contacts call for the three jobs")
	require.Len(t, fake.Upserts(), 4, "two companies, two contacts: the shared records are sent once")
	_, ok := fake.Contact("good@acme.test")
	require.True(t, ok)
}
