package reconcile_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/reconcile"
)

func TestRequestOptions(t *testing.T) {
	t.Parallel()
	const tenant = "6f1c2b8e-8f3a-4c7e-9a51-0d2b7f1e4c10"
	day := func(s string) time.Time {
		d, err := time.Parse(time.DateOnly, s)
		require.NoError(t, err)
		return d
	}
	cases := []struct {
		name    string
		req     reconcile.Request
		wantErr error
		from    time.Time
		to      time.Time
	}{
		{name: "unscoped is refused", req: reconcile.Request{Apply: true}, wantErr: reconcile.ErrUnscoped},
		{name: "tenant alone", req: reconcile.Request{TenantID: tenant}},
		{name: "range alone, to includes its whole day", req: reconcile.Request{From: "2026-11-01", To: "2026-11-30"},
			from: day("2026-11-01"), to: day("2026-12-01")},
		{name: "31 days is the limit", req: reconcile.Request{From: "2026-11-01", To: "2026-12-01"},
			from: day("2026-11-01"), to: day("2026-12-02")},
		{name: "32 days is too wide", req: reconcile.Request{From: "2026-11-01", To: "2026-12-02"}, wantErr: reconcile.ErrRangeTooWide},
		{name: "RFC 3339 ends", req: reconcile.Request{From: "2026-11-27T10:00:00Z", To: "2026-11-27T12:00:00+01:00"},
			from: day("2026-11-27").Add(10 * time.Hour), to: day("2026-11-27").Add(11 * time.Hour)},
		{name: "from without to", req: reconcile.Request{TenantID: tenant, From: "2026-11-01"}, wantErr: reconcile.ErrRangeIncomplete},
		{name: "inverted range", req: reconcile.Request{From: "2026-11-10", To: "2026-11-01"}, wantErr: reconcile.ErrRangeInverted},
		{name: "tenant not a uuid", req: reconcile.Request{TenantID: "acme"}, wantErr: reconcile.ErrBadTenant},
		{name: "nil uuid is not a tenant", req: reconcile.Request{TenantID: "00000000-0000-0000-0000-000000000000"}, wantErr: reconcile.ErrBadTenant},
		{name: "bad date", req: reconcile.Request{From: "27/11/2026", To: "2026-11-28"}, wantErr: reconcile.ErrBadTime},
		{name: "from-stripe needs a range", req: reconcile.Request{TenantID: tenant, FromStripe: true}, wantErr: reconcile.ErrStripeNeedsRange},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, err := tc.req.Options()
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				var se *reconcile.ScopeError
				require.ErrorAs(t, err, &se, "a refused scope is a ScopeError, so callers can exit 2")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.req.Apply, o.Apply)
			require.True(t, tc.from.Equal(o.Scope.From), "from %s, want %s", o.Scope.From, tc.from)
			require.True(t, tc.to.Equal(o.Scope.To), "to %s, want %s", o.Scope.To, tc.to)
		})
	}
}
