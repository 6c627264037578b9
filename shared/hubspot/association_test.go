package hubspot_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
)

// A contact upserted once is associated with two companies (its two tenants) by the ids the
// upserts returned; associating again changes nothing; a pair naming a company that does not
// exist is refused alone (207); a rate limit refuses the whole call with HubSpot's wait.
func TestAssociateContactsWithCompanies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	companies, err := b.client.UpsertCompanies(ctx, []hubspot.CompanyInput{
		{TenantID: "tenant-a", Properties: map[string]string{"name": "A"}},
		{TenantID: "tenant-b", Properties: map[string]string{"name": "B"}},
	})
	require.NoError(t, err)
	contacts, err := b.client.UpsertContacts(ctx, []hubspot.ContactInput{{Email: "shared@acme.test"}})
	require.NoError(t, err)
	contact := contacts.Records[0].ObjectID
	pairs := []hubspot.Association{
		{ContactID: contact, CompanyID: companies.Records[0].ObjectID},
		{ContactID: contact, CompanyID: companies.Records[1].ObjectID},
		{ContactID: contact, CompanyID: "999999999"},
	}
	for range 2 {
		errs, err := b.client.AssociateContactsWithCompanies(ctx, pairs)
		require.NoError(t, err)
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		var he *hubspot.Error
		require.ErrorAs(t, errs[2], &he)
		require.Equal(t, http.StatusMultiStatus, he.StatusCode)
		require.Equal(t, "VALIDATION_ERROR", he.Category)
		require.False(t, he.Retryable(), "a missing record does not appear by retrying")
	}
	require.Equal(t, []string{"tenant-a", "tenant-b"}, b.fake.CompaniesOf("Shared@acme.test"))
	require.Len(t, b.fake.Associations(), 2, "associating twice is one association")

	b.fake.SetMode(hubspotfake.ModeRateLimited)
	_, err = b.client.AssociateContactsWithCompanies(ctx, pairs[:1])
	var he *hubspot.Error
	require.ErrorAs(t, err, &he)
	require.Equal(t, http.StatusTooManyRequests, he.StatusCode)
	require.True(t, he.Retryable())
	require.Positive(t, he.RetryAfter)
}
