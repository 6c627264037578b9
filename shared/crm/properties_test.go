package crm_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/crm"
)

// The portal_* properties `reconcile setup` creates on each object are exactly those the
// record builders send there: one list, so a property added to a record is created too.
func TestCustomPropertiesAreWhatTheRecordsCarry(t *testing.T) {
	t.Parallel()
	p := crm.Projection{TenantID: uuid.New(), Name: "Acme", Email: "billing@acme.test", Plan: "pro", BillingStatus: "active"}
	for object, props := range map[string]map[string]string{crm.ObjectContacts: p.Properties(), crm.ObjectCompanies: p.CompanyProperties()} {
		var sent, listed []string
		for k := range props {
			if strings.HasPrefix(k, "portal_") {
				sent = append(sent, k)
			}
		}
		for _, cp := range crm.CustomProperties {
			if slices.Contains(cp.Objects, object) {
				listed = append(listed, cp.Name)
			}
		}
		slices.Sort(sent)
		slices.Sort(listed)
		require.Equal(t, sent, listed, object)
	}
}
