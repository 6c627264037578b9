package crm_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
)

type bundle struct {
	pool     *pgxpool.Pool
	inserter *jobs.Inserter
	fake     *hubspotfake.Server
	clock    *jobstest.Clock
	alerts   *atomic.Int64
	cfg      jobs.RunConfig
}

func setup(t testing.TB) bundle {
	t.Helper()
	pool := dbtest.New(t)
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	fake := hubspotfake.NewTest(t)
	workers, err := crm.NewWorkers(function.Deps{Pool: pool},
		crm.PushConfig{HubSpotBaseURL: fake.URL(), HubSpotAccessToken: config.Secret(fake.AccessToken())})
	require.NoError(t, err)
	alerts := &atomic.Int64{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		alerts.Add(1)
	}))
	t.Cleanup(receiver.Close)
	clock := jobstest.NewClock()
	return bundle{
		pool: pool, inserter: ins, fake: fake, clock: clock, alerts: alerts,
		cfg: jobs.RunConfig{
			Queue: jobs.QueueCRM, Workers: workers, Budget: 10 * time.Second,
			Time: clock, AlertWebhookURL: receiver.URL,
		},
	}
}

// newTenant creates a tenant; with a plan it also has a billing projection.
func newTenant(t testing.TB, b bundle, email, plan, status string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var id uuid.UUID
	require.NoError(t, b.pool.QueryRow(ctx,
		`insert into public.tenants (name, contact_email, crm_owner_email) values ($1, nullif($2, ''), 'owner@founder.test') returning id`,
		"Tenant "+email, email).Scan(&id))
	if plan != "" {
		_, err := b.pool.Exec(ctx, `insert into private.billing_accounts (tenant_id, customer_id, customer_email, plan, status, current_period_end)
			values ($1, $5, $2, $3, $4, '2026-12-27T00:00:00Z')`, id, email, plan, status, "cus_"+id.String()[:14])
		require.NoError(t, err)
	}
	return id
}

func enqueue(t testing.TB, b bundle, tenantID uuid.UUID, event string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
		return b.inserter.EnqueueCRMSync(ctx, tx, tenantID, event, 0)
	}))
}

func run(t testing.TB, b bundle, cfg jobs.RunConfig) jobs.Summary {
	t.Helper()
	sum, err := jobs.Run(context.Background(), b.pool, cfg)
	require.NoError(t, err)
	return sum
}

func contactUpserts(b bundle) map[string]int {
	out := map[string]int{}
	for _, u := range b.fake.Upserts() {
		if u.ObjectType == "contacts" {
			out[u.ID]++
		}
	}
	return out
}

func syncStatus(t testing.TB, b bundle, tenantID uuid.UUID) (state, lastError string) {
	t.Helper()
	var le *string
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select state, last_error from private.sync_status where integration = 'crm' and subject = $1`,
		jobs.CRMSubject(tenantID)).Scan(&state, &le))
	if le != nil {
		lastError = *le
	}
	return state, lastError
}

func TestCRMJobPushesTheCurrentProjectionOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tenantID := newTenant(t, b, "founder@acme.test", "starter", "trialing")
	for range 10 {
		enqueue(t, b, tenantID, "evt_checkout_completed")
	}
	// The projection moves on after the event was queued: the push must carry the new state.
	_, err := b.pool.Exec(context.Background(),
		`update private.billing_accounts set plan = 'pro', status = 'active' where tenant_id = $1`, tenantID)
	require.NoError(t, err)

	sum := run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum)
	require.Equal(t, map[string]int{"founder@acme.test": 1}, contactUpserts(b))
	contact, ok := b.fake.Contact("founder@acme.test")
	require.True(t, ok)
	require.Empty(t, contact.Properties[crm.PropPlan], "billing facts are the company's")
	company, ok := b.fake.Company(tenantID.String())
	require.True(t, ok, "the tenant's company is upserted by portal_tenant_id")
	require.Equal(t, "Tenant founder@acme.test", company.Properties[crm.PropCompanyName])
	require.Equal(t, "pro", company.Properties[crm.PropPlan])
	require.Equal(t, "active", company.Properties[crm.PropBillingStatus])
	require.Equal(t, "customer", company.Properties[crm.PropLifecycleStage])
	require.Equal(t, tenantID.String(), company.Properties[crm.PropTenantID])
	require.Equal(t, "owner@founder.test", company.Properties[crm.PropOwnerEmail])
	require.Equal(t, "2026-12-27", company.Properties[crm.PropPeriodEnd])
	require.Equal(t, []string{tenantID.String()}, b.fake.CompaniesOf("founder@acme.test"), "the contact is associated with its company")
	state, _ := syncStatus(t, b, tenantID)
	require.Equal(t, "synced", state)
}

func TestProjectionEmailFallsBackToTheTenantsContact(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name      string
		email     string
		plan      string
		wantPush  string
		wantStage string
	}{
		{name: "no checkout yet uses the tenant's contact", email: "lead@acme.test", wantPush: "lead@acme.test", wantStage: "lead"},
		{name: "no email at all is skipped, not failed", email: ""},
	}
	for _, tc := range tests {
		tenantID := newTenant(t, b, tc.email, tc.plan, "")
		enqueue(t, b, tenantID, "evt_"+tc.name)
		sum := run(t, b, b.cfg)
		require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum, tc.name)
		if tc.wantPush == "" {
			continue
		}
		_, ok := b.fake.Contact(tc.wantPush)
		require.True(t, ok, tc.name)
		company, ok := b.fake.Company(tenantID.String())
		require.True(t, ok, tc.name)
		require.Equal(t, tc.wantStage, company.Properties[crm.PropLifecycleStage], tc.name)
	}
	require.Len(t, contactUpserts(b), 1, "the tenant without an email has no contact")
	require.Len(t, b.fake.Upserts(), 3, "two companies (one per tenant) and one contact")
}

// TestHubSpotOutageIsRiddenOut: HubSpot answers 503 for five simulated minutes, then recovers.
func TestHubSpotOutageIsRiddenOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var tenants []uuid.UUID
	for i := range 6 {
		id := newTenant(t, b, fmt.Sprintf("t%d@acme.test", i), "pro", "active")
		enqueue(t, b, id, "evt_a")
		tenants = append(tenants, id)
	}
	enqueue(t, b, tenants[0], "evt_b") // a second change of one tenant while HubSpot is down

	var helpdeskDone atomic.Int64
	helpdesk := river.NewWorkers()
	river.AddWorker(helpdesk, river.WorkFunc(func(context.Context, *river.Job[jobs.HelpdeskTicketArgs]) error {
		helpdeskDone.Add(1)
		return nil
	}))
	helpdeskCfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: helpdesk, Budget: 10 * time.Second, Time: b.clock}

	b.fake.SetMode(hubspotfake.ModeDown)
	outageEnd := b.clock.Now().Add(5 * time.Minute)
	ticket := 0
	for b.clock.Now().Before(outageEnd) {
		ctx := context.Background()
		ticket++
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error { // support keeps working
			return b.inserter.EnqueueHelpdeskTicket(ctx, tx, tenants[1], uuid.New())
		}))
		sum := run(t, b, b.cfg)
		require.Zero(t, sum.Succeeded+sum.Discarded)
		run(t, b, helpdeskCfg)
		require.Equal(t, int64(ticket), helpdeskDone.Load(), "the helpdesk queue is not held up by HubSpot")
		b.clock.Advance(30 * time.Second)
	}
	require.Empty(t, contactUpserts(b))
	state, lastError := syncStatus(t, b, tenants[0])
	require.Equal(t, "retrying", state)
	require.Contains(t, lastError, "503")

	b.fake.SetMode(hubspotfake.ModeUp)
	for i := 0; i < 30 && len(contactUpserts(b)) < len(tenants); i++ {
		run(t, b, b.cfg)
		b.clock.Advance(30 * time.Second)
	}
	run(t, b, b.cfg) // anything left due

	want := map[string]int{}
	for i := range tenants {
		want[fmt.Sprintf("t%d@acme.test", i)] = 1
	}
	got := contactUpserts(b)
	// Tenant 0's two jobs may land in one batch (one upsert) or in two runs (two identical
	// upserts): both carry the same current projection. Every other tenant: exactly once.
	require.LessOrEqual(t, got["t0@acme.test"], 2)
	got["t0@acme.test"] = 1
	require.Equal(t, want, got, "every pending change reached HubSpot")
	letters, err := jobs.DeadLetters(context.Background(), b.pool, jobs.QueueCRM, nil)
	require.NoError(t, err)
	require.Empty(t, letters, "nothing was dead-lettered")
	for _, id := range tenants {
		state, lastError := syncStatus(t, b, id)
		require.Equal(t, "synced", state)
		require.Empty(t, lastError)
	}
	require.Equal(t, int64(1), b.alerts.Load(), "one alert for the whole outage")
}

func TestPermanentHubSpotErrorsDeadLetterAndRequeueDelivers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	good := newTenant(t, b, "good@acme.test", "pro", "active")
	bad := newTenant(t, b, "bad@acme.test", "pro", "active")
	enqueue(t, b, good, "evt_1")
	enqueue(t, b, bad, "evt_1")

	// 400 for one record: it fails alone (in one batch or not: TestOneBadRecordFailsAlone).
	b.fake.FailEmail("bad@acme.test", http.StatusBadRequest)
	sum := run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 1, Discarded: 1}, sum)
	state, lastError := syncStatus(t, b, bad)
	require.Equal(t, "failed", state)
	require.Contains(t, lastError, "VALIDATION_ERROR")

	// 401 for the whole batch: every job of it is dead-lettered with HubSpot's message.
	enqueue(t, b, good, "evt_2")
	b.fake.SetAccessToken("pat-na1-rotated")
	sum = run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 1, Discarded: 1}, sum)

	letters, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueCRM, nil)
	require.NoError(t, err)
	require.Len(t, letters, 2)
	require.Contains(t, letters[0].LastError, "Authentication credentials not found")
	require.Equal(t, good, letters[0].TenantID)
	require.Contains(t, letters[1].LastError, "VALIDATION_ERROR")
	require.Equal(t, 1, int(b.alerts.Load()), "a dead letter alerts once per window")

	// The founder fixes the token and the record; requeue both and they are delivered.
	b.fake.SetAccessToken(hubspotfake.DefaultAccessToken)
	b.fake.FailEmail("bad@acme.test", 0)
	res, err := jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{Integration: jobs.QueueCRM})
	require.NoError(t, err)
	require.Equal(t, 2, res.Requeued)
	sum = run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 2}, sum)
	_, ok := b.fake.Contact("bad@acme.test")
	require.True(t, ok)
	state, _ = syncStatus(t, b, bad)
	require.Equal(t, "synced", state)
}

func TestRateLimitSnoozesWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := newTenant(t, b, "busy@acme.test", "pro", "active")
	enqueue(t, b, id, "evt_1")
	b.fake.SetMode(hubspotfake.ModeRateLimited)
	sum := run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 1, Snoozed: 1}, sum)
	var attempt, maxAttempts int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select attempt, max_attempts from private.river_job`).Scan(&attempt, &maxAttempts))
	require.Equal(t, maxAttempts-jobs.MaxAttempts, attempt, "a snooze gives the attempt back")

	b.fake.SetMode(hubspotfake.ModeUp)
	sum = run(t, b, b.cfg)
	require.Zero(t, sum.Worked, "the job sleeps for the wait HubSpot asked for")
	b.clock.Advance(time.Minute)
	sum = run(t, b, b.cfg)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum)
	require.Zero(t, b.alerts.Load(), "rate limiting is not an incident")
}

// BenchmarkCRMPush measures jobs per second through the crm queue against a HubSpot that takes
// 20 ms per call (one full run per b.N jobs).
func BenchmarkCRMPush(b *testing.B) {
	bb := setup(b)
	bb.fake.SetLatency(20 * time.Millisecond)
	n := max(b.N, 500)
	ctx := context.Background()
	rows, err := bb.pool.Query(ctx, `insert into public.tenants (name, contact_email)
		select 'T' || g, 'bench' || g || '@acme.test' from generate_series(1, $1) g returning id`, n)
	require.NoError(b, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(b, err)
	require.NoError(b, db.Tx(ctx, bb.pool, func(tx pgx.Tx) error {
		for _, id := range ids {
			if err := bb.inserter.EnqueueCRMSync(ctx, tx, id, "evt_bench", 0); err != nil {
				return err
			}
		}
		return nil
	}))
	cfg := bb.cfg
	cfg.Budget = time.Minute
	b.ResetTimer()
	start := time.Now()
	sum, err := jobs.Run(ctx, bb.pool, cfg)
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, err)
	require.Equal(b, n, sum.Succeeded)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(float64(bb.fake.Calls()), "hubspot_calls")
}

// The CRM shows billing's own view of the account (the one the webhook compares to decide a
// push), and says its lifecycle stage in HubSpot's words, for every subscription status.
func TestProjectionIsBillingsCRMView(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cases := []struct {
		status    string
		lifecycle string
		hubspot   string
	}{
		{"none", billing.LifecycleProspect, "lead"},
		{"incomplete", billing.LifecycleProspect, "lead"},
		{"incomplete_expired", billing.LifecycleProspect, "lead"},
		{"trialing", billing.LifecycleTrial, "opportunity"},
		{"active", billing.LifecycleCustomer, "customer"},
		{"past_due", billing.LifecycleCustomer, "customer"},
		{"unpaid", billing.LifecycleCustomer, "customer"},
		{"paused", billing.LifecycleCustomer, "customer"},
		{"canceled", billing.LifecycleChurned, "other"},
	}
	for _, tc := range cases {
		id := newTenant(t, b, tc.status+"@acme.test", "pro", tc.status)
		p, err := crm.LoadProjection(ctx, b.pool, id)
		require.NoError(t, err, tc.status)
		acct, err := billing.LoadAccount(ctx, b.pool, id)
		require.NoError(t, err, tc.status)
		view := acct.CRMView()
		require.Equal(t, tc.lifecycle, view.Lifecycle, tc.status)
		require.Equal(t, view.Lifecycle, p.Lifecycle, tc.status)
		require.Equal(t, view.Status, p.BillingStatus, tc.status)
		require.Equal(t, view.Plan, p.Plan, tc.status)
		require.Equal(t, view.Email, p.Email, tc.status)
		require.NotNil(t, p.CurrentPeriodEnd, tc.status)
		require.True(t, view.CurrentPeriodEnd.Equal(*p.CurrentPeriodEnd), tc.status)
		require.Equal(t, tc.hubspot, p.CompanyProperties()[crm.PropLifecycleStage], tc.status)
	}
	// A tenant that never checked out has no billing row: billing's view of an empty account.
	id := newTenant(t, b, "new@acme.test", "", "")
	p, err := crm.LoadProjection(ctx, b.pool, id)
	require.NoError(t, err)
	require.Equal(t, billing.Account{}.CRMView().Status, p.BillingStatus)
	require.Equal(t, "lead", p.LifecycleStage())
	require.Equal(t, "new@acme.test", p.Email, "the tenant's contact until billing knows an email")
	require.Nil(t, p.CurrentPeriodEnd)
}

// Two tenants whose payers typed the same email into Checkout, pushed in one batch and in
// separate batches: each company ends with its own billing facts, the one contact carries
// none of them and is associated with both companies, and both jobs complete with their
// version sent (no update lost).
func TestTenantsSharingAnEmailKeepTheirOwnCompanies(t *testing.T) {
	t.Parallel()
	for _, oneBatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("one batch %v", oneBatch), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			a := newTenant(t, b, "shared@acme.test", "starter", "trialing")
			c := newTenant(t, b, "Shared@acme.test", "pro", "active")
			enqueue(t, b, a, "evt_a")
			if oneBatch {
				enqueue(t, b, c, "evt_c")
				// One batch when River fetches both at once (TestSharedEmailInOneBatch forces it).
				require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 2}, run(t, b, b.cfg))
			} else {
				require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, run(t, b, b.cfg))
				enqueue(t, b, c, "evt_c")
				require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, run(t, b, b.cfg))
			}

			for id, want := range map[uuid.UUID][2]string{a: {"starter", "trialing"}, c: {"pro", "active"}} {
				company, ok := b.fake.Company(id.String())
				require.True(t, ok)
				require.Equal(t, want[0], company.Properties[crm.PropPlan], "tenant %s", id)
				require.Equal(t, want[1], company.Properties[crm.PropBillingStatus], "tenant %s", id)
				require.Equal(t, id.String(), company.Properties[crm.PropTenantID])
			}
			contact, ok := b.fake.Contact("shared@acme.test")
			require.True(t, ok)
			for _, prop := range []string{crm.PropTenantID, crm.PropPlan, crm.PropBillingStatus, crm.PropLifecycleStage, crm.PropOwnerEmail, crm.PropPeriodEnd} {
				require.Empty(t, contact.Properties[prop], "the shared contact carries no tenant's %s", prop)
			}
			want := []string{a.String(), c.String()}
			slices.Sort(want)
			require.Equal(t, want, b.fake.CompaniesOf("shared@acme.test"), "the contact is associated with both companies")
			var sent int
			require.NoError(t, b.pool.QueryRow(context.Background(),
				`select count(*) from private.crm_pushes where tenant_id in ($1, $2)`, a, c).Scan(&sent))
			require.Equal(t, 2, sent, "both tenants' versions were sent")
		})
	}
}
