package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

type bundle struct {
	url    string
	tenant uuid.UUID
	ticket uuid.UUID
	jobID  int64
}

// setup is a database with one tenant whose ticket's helpdesk push is dead-lettered.
func setup(t *testing.T) bundle {
	t.Helper()
	ctx := context.Background()
	b := bundle{url: dbtest.NewURL(t)}
	pool, err := db.Open(ctx, b.url, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('Acme') returning id`).Scan(&b.tenant))
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tickets (tenant_id, subject, body, category, priority)
		values ($1, 's', 'b', 'technical', 'high') returning id`, b.tenant).Scan(&b.ticket))
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error { return ins.EnqueueHelpdeskTicket(ctx, tx, b.tenant, b.ticket) }))
	require.NoError(t, pool.QueryRow(ctx, `
		update private.river_job set state = 'cancelled', finalized_at = now(),
		    errors = array[jsonb_build_object('at', now(), 'attempt', 1, 'error', 'Zendesk answered 422: requester invalid')]
		returning id`).Scan(&b.jobID))
	return b
}

func (b bundle) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"DATABASE_URL": b.url}
	code := run(context.Background(), args, &out, &errOut, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return code, out.String(), errOut.String()
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	b := bundle{url: "postgres://nobody@127.0.0.1:1/none"} // a refused run never connects
	cases := []struct {
		name string
		args []string
		want string
	}{
		{name: "unscoped", args: []string{"--apply"}, want: "refusing an unscoped run"},
		{name: "over-wide", args: []string{"--from", "2026-10-01", "--to", "2026-11-27"}, want: "at most 31 days"},
		{name: "stray argument", args: []string{"--tenant", uuid.NewString(), "everything"}, want: "unexpected argument"},
		{name: "unknown command", args: []string{"fix-all"}, want: "unknown command"},
		{name: "dead letters without integration", args: []string{"dead-letters"}, want: "--integration crm"},
		{name: "requeue without a target", args: []string{"requeue", "--integration", "crm"}, want: "exactly one of"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := b.run(t, tc.args...)
			require.Equal(t, exitRefused, code, errOut)
			require.Empty(t, out)
			require.Contains(t, errOut, tc.want)
			require.NotContains(t, errOut, "reconcile: reconcile:")
		})
	}
}

func TestTriageFlow(t *testing.T) {
	t.Parallel()
	b := setup(t)

	code, out, errOut := b.run(t, "health", "--tenant", b.tenant.String())
	require.Equal(t, exitOK, code, errOut)
	require.Regexp(t, `helpdesk\s+1\s+1\s+0\s+-\s+1\s`, out, "one attempt, one failure, nothing pending, one dead letter:\n"+out)

	code, out, errOut = b.run(t, "dead-letters", "--integration", "helpdesk", "--json")
	require.Equal(t, exitOK, code, errOut)
	var letters []jobs.DeadLetter
	require.NoError(t, json.Unmarshal([]byte(out), &letters))
	require.Len(t, letters, 1)
	require.Equal(t, b.jobID, letters[0].JobID)
	require.Contains(t, letters[0].LastError, "requester invalid")

	// Dry run by default: says what it would do, changes nothing.
	code, out, errOut = b.run(t, "--tenant", b.tenant.String())
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "DRY RUN")
	require.Contains(t, out, "push dead-lettered (cancelled)")
	code, out, _ = b.run(t, "--tenant", b.tenant.String(), "--json")
	require.Equal(t, exitOK, code)
	var rep reconcile.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.True(t, rep.DryRun)
	require.Equal(t, 1, rep.Total().Enqueued)

	// Requeue the one job (after "fixing the requester"): it is live again, so reconcile finds
	// nothing to do.
	code, out, errOut = b.run(t, "requeue", "--job", fmt.Sprint(b.jobID))
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "requeued 1, skipped 0, failed 0\n", out)
	code, out, errOut = b.run(t, "--tenant", b.tenant.String(), "--apply", "--json")
	require.Equal(t, exitOK, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Zero(t, rep.Total().Enqueued)
	require.Equal(t, 1, rep.Total().Fine)
	code, out, _ = b.run(t, "dead-letters", "--integration", "helpdesk")
	require.Equal(t, exitOK, code)
	require.True(t, strings.HasPrefix(out, "dead letters of helpdesk: 0"), out)
}

// A run that finds something it cannot repair exits 1 and says why, so a script or a person
// notices; the same scope with nothing broken exits 0.
func TestRunNeedingAttentionExitsOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, b.url, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	// A delivery, stored unmatched, for a Stripe customer no tenant is linked to.
	sub := stripemock.Fixture(t, "subscription")
	sub["customer"] = "cus_nobody"
	obj, err := json.Marshal(sub)
	require.NoError(t, err)
	created := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	payload, err := json.Marshal(map[string]any{"id": "evt_nobody", "object": "event", "type": billing.TypeSubscriptionUpdated,
		"api_version": billing.APIVersion, "created": created.Unix(), "data": map[string]any{"object": json.RawMessage(obj)}})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `insert into private.stripe_events (id, type, created, payload, outcome)
		values ('evt_nobody', $1, $2, $3, 'unmatched')`, billing.TypeSubscriptionUpdated, created, payload)
	require.NoError(t, err)

	code, out, errOut := b.run(t, "--from", "2026-11-20", "--to", "2026-11-20", "--apply")
	require.Equal(t, exitAttention, code, errOut)
	require.Contains(t, out, "stripe_event FAILED 1: matches no tenant yet")
	require.Contains(t, out, "ATTENTION")

	code, out, errOut = b.run(t, "--from", "2026-11-21", "--to", "2026-11-22", "--apply")
	require.Equal(t, exitOK, code, errOut+out)
}

// setupDeadCRM adds a dead-lettered CRM push for each tenant.
func setupDeadCRM(t *testing.T, b bundle, tenants ...uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	pool, err := db.Open(ctx, b.url, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	for i, tenant := range tenants {
		require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error {
			return ins.EnqueueCRMSync(ctx, tx, tenant, fmt.Sprintf("evt_dead_%d", i), 0)
		}))
	}
	_, err = pool.Exec(ctx, `update private.river_job set state = 'discarded', finalized_at = now(),
		errors = array[jsonb_build_object('at', now(), 'attempt', 8, 'error', 'HubSpot answered 401')]
		where kind = 'crm_sync'`)
	require.NoError(t, err)
}

// Requeue after a fix puts back exactly what was asked: one tenant's dead letters of one
// integration, or all of an integration's; the other integration's stay dead.
func TestRequeueScopes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		args      func(b bundle, other uuid.UUID) []string
		requeued  string
		remaining map[string]int // dead letters left per integration
	}{
		{
			name: "one tenant's",
			args: func(b bundle, _ uuid.UUID) []string {
				return []string{"--integration", "crm", "--tenant", b.tenant.String()}
			},
			requeued:  "requeued 1, skipped 0, failed 0\n",
			remaining: map[string]int{"crm": 1, "helpdesk": 1},
		},
		{
			name:      "all of an integration's",
			args:      func(bundle, uuid.UUID) []string { return []string{"--integration", "crm", "--all"} },
			requeued:  "requeued 2, skipped 0, failed 0\n",
			remaining: map[string]int{"crm": 0, "helpdesk": 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			other := uuid.New()
			func() {
				pool, err := db.Open(context.Background(), b.url, db.Options{})
				require.NoError(t, err)
				defer pool.Close()
				_, err = pool.Exec(context.Background(), `insert into public.tenants (id, name) values ($1, 'Globex')`, other)
				require.NoError(t, err)
			}()
			setupDeadCRM(t, b, b.tenant, other)

			code, out, errOut := b.run(t, append([]string{"requeue"}, tc.args(b, other)...)...)
			require.Equal(t, exitOK, code, errOut)
			require.Equal(t, tc.requeued, out)
			for integration, want := range tc.remaining {
				code, out, errOut := b.run(t, "dead-letters", "--integration", integration, "--json")
				require.Equal(t, exitOK, code, errOut)
				var letters []jobs.DeadLetter
				require.NoError(t, json.Unmarshal([]byte(out), &letters))
				require.Len(t, letters, want, integration)
				for _, d := range letters {
					if integration == "crm" {
						require.Equal(t, other, d.TenantID, "the other tenant's dead letter stays")
						require.Equal(t, "HubSpot answered 401", d.LastError)
					}
				}
			}
		})
	}
}

// The README's triage order: a dead-lettered helpdesk push, reconcile --apply (which queues a
// fresh push with the same unique key), then requeue --all. The requeue skips the one reconcile
// already covered (marking it resolved) instead of failing on the queue's unique index, and
// goes on to requeue the others.
func TestRequeueAfterReconcileSkipsWhatIsAlreadyQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, b.url, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	// Another tenant's dead-lettered ticket push, outside the reconcile's scope.
	var other, otherTicket uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('Globex') returning id`).Scan(&other))
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tickets (tenant_id, subject, body, category, priority)
		values ($1, 's', 'b', 'technical', 'high') returning id`, other).Scan(&otherTicket))
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error { return ins.EnqueueHelpdeskTicket(ctx, tx, other, otherTicket) }))
	_, err = pool.Exec(ctx, `update private.river_job set state = 'discarded', finalized_at = now() where args->>'ticket_id' = $1`, otherTicket.String())
	require.NoError(t, err)

	code, out, errOut := b.run(t, "--tenant", b.tenant.String(), "--apply")
	require.Equal(t, exitOK, code, errOut+out)

	code, out, errOut = b.run(t, "requeue", "--integration", "helpdesk", "--all")
	require.Equal(t, exitOK, code, errOut+out)
	require.Contains(t, out, "requeued 1, skipped 1, failed 0")
	require.Contains(t, out, fmt.Sprintf("skipped job %d:", b.jobID))

	code, out, errOut = b.run(t, "dead-letters", "--integration", "helpdesk")
	require.Equal(t, exitOK, code, errOut)
	require.True(t, strings.HasPrefix(out, "dead letters of helpdesk: 0"), out)
	code, out, errOut = b.run(t, "health", "--tenant", b.tenant.String(), "--json")
	require.Equal(t, exitOK, code, errOut)
	var rep struct {
		Integrations []struct {
			Name        string `json:"integration"`
			DeadLetters int    `json:"dead_letters"`
			Pending     int    `json:"pending"`
		} `json:"integrations"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	for _, i := range rep.Integrations {
		if i.Name == "helpdesk" {
			require.Zero(t, i.DeadLetters, "a resolved dead letter no longer counts")
			require.Equal(t, 1, i.Pending, "reconcile's fresh push waits")
		}
	}
	// Run again: nothing left to requeue, nothing fails.
	code, out, errOut = b.run(t, "requeue", "--integration", "helpdesk", "--all")
	require.Equal(t, exitOK, code, errOut+out)
	require.Contains(t, out, "requeued 0, skipped 0, failed 0")
}

// A dead letter nobody will requeue (pushed by hand) is resolved with a note: it leaves the
// list, and resolving it twice is refused.
func TestResolveTakesADeadLetterOffTheList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code, _, errOut := b.run(t, "resolve", "--job", fmt.Sprint(b.jobID))
	require.Equal(t, exitRefused, code)
	require.Contains(t, errOut, "--note")
	code, out, errOut := b.run(t, "resolve", "--job", fmt.Sprint(b.jobID), "--note", "created in Zendesk by hand")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, fmt.Sprintf("resolved job %d\n", b.jobID), out)
	code, out, _ = b.run(t, "dead-letters", "--integration", "helpdesk")
	require.Equal(t, exitOK, code)
	require.True(t, strings.HasPrefix(out, "dead letters of helpdesk: 0"), out)
	code, _, errOut = b.run(t, "resolve", "--job", fmt.Sprint(b.jobID), "--note", "again")
	require.Equal(t, exitAttention, code)
	require.Contains(t, errOut, "not a dead-lettered job")
}
