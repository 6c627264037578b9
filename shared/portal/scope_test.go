package portal

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/tenant"
)

// private.portal_enter restates tenant.Resolve's membership rules in SQL, so that a read is
// one statement; the other functions (checkout, tickets) still resolve in Go. Both must
// decide alike: the same tenant and role, or the same refusal, for every user and X-Tenant-Id
// (none, one of the user's tenants, another's, one that does not exist), across roles, users
// in several tenants, and removed (disabled) memberships. A change to either copy of the rules
// that the other does not make fails here.
func TestPortalEnterResolvesTheScopeAsTenantResolveDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	acme, globex, initech, nowhere := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	_, err := pool.Exec(ctx, `insert into public.tenants (id, name) values ($1, 'Acme'), ($2, 'Globex'), ($3, 'Initech')`,
		acme, globex, initech)
	require.NoError(t, err)
	users := map[string]uuid.UUID{}
	member := func(name string, tenantID uuid.UUID, role string, removed bool) {
		if _, ok := users[name]; !ok {
			users[name] = uuid.New()
		}
		_, err := pool.Exec(ctx, `insert into public.memberships (tenant_id, user_id, role, disabled_at)
			values ($1, $2, $3, case when $4 then now() end)`, tenantID, users[name], role, removed)
		require.NoError(t, err)
	}
	member("owner", acme, "owner", false)
	member("admin", acme, "admin", false)
	member("member", acme, "member", false)
	member("two tenants", acme, "admin", false)
	member("two tenants", globex, "member", false)
	member("three tenants, one removed", acme, "owner", false)
	member("three tenants, one removed", globex, "admin", false)
	member("three tenants, one removed", initech, "member", true)
	member("removed", acme, "member", true)
	member("removed from one of two", acme, "owner", true)
	member("removed from one of two", globex, "member", false)
	users["no membership"] = uuid.New()

	// scope answers a decision as portal_enter spells it: a refusal, or tenant and role.
	type scope struct {
		refusal string
		tenant  uuid.UUID
		role    string
	}
	resolve := func(user uuid.UUID, requested uuid.UUID) scope {
		header := ""
		if requested != uuid.Nil {
			header = requested.String()
		}
		s, err := tenant.Resolve(ctx, pool, auth.Identity{UserID: user}, header)
		switch {
		case errors.Is(err, tenant.ErrNotMember):
			return scope{refusal: tenant.RefusalNotMember}
		case errors.Is(err, tenant.ErrTenantRequired):
			return scope{refusal: tenant.RefusalChooseTenant}
		}
		require.NoError(t, err)
		return scope{tenant: s.TenantID, role: string(s.Role)}
	}
	enter := func(user uuid.UUID, requested uuid.UUID) scope {
		var arg any
		if requested != uuid.Nil {
			arg = requested
		}
		var refusal, role *string
		var tenantID *uuid.UUID
		require.NoError(t, pool.QueryRow(ctx, `select refusal, tenant_id, role from private.portal_enter($1, $2, $3, null)`,
			user, arg, fmt.Sprintf(`{"sub":%q,"role":"authenticated"}`, user)).Scan(&refusal, &tenantID, &role))
		var s scope
		if refusal != nil {
			s.refusal = *refusal
		}
		if tenantID != nil {
			s.tenant = *tenantID
		}
		if role != nil {
			s.role = *role
		}
		return s
	}

	decisions := map[string]int{}
	for name, user := range users {
		for _, requested := range []uuid.UUID{uuid.Nil, acme, globex, initech, nowhere} {
			want, got := resolve(user, requested), enter(user, requested)
			require.Equal(t, want, got, "%s, X-Tenant-Id %v: tenant.Resolve against private.portal_enter", name, requested)
			decisions[want.refusal+want.role]++
		}
	}
	// The cases reach every outcome, so an agreement above is not an agreement on refusals alone.
	for _, outcome := range []string{tenant.RefusalNotMember, tenant.RefusalChooseTenant, "owner", "admin", "member"} {
		require.Positive(t, decisions[outcome], "no case decided %q", outcome)
	}
}
