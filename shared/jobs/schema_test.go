package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// River's CHECK rules on private.river_job hold as River wrote them, though four of them are
// now the checks of the columns' domains and the fifth is written shorter
// (20261204100100_river_job_checks_cached.sql): every write that breaks one fails with
// check_violation under the rule's name, and the rule on finalized_at accepts exactly the rows
// River's own expression accepts, for every state.
func TestRiversCheckRulesStillHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	const insert = `insert into private.river_job (args, kind, max_attempts, priority, queue, state, finalized_at)
		values ('{}', $1, $2, $3, $4, $5::private.river_job_state, case when $6 then now() end)`
	type job struct {
		kind        string
		maxAttempts int16
		priority    int16
		queue       string
		state       string
		finalized   bool
	}
	ok := job{kind: "crm_sync", maxAttempts: 25, priority: 1, queue: "crm", state: "available"}
	with := func(f func(*job)) job { j := ok; f(&j); return j }
	cases := []struct {
		name string
		job  job
		rule string // "" when the row is valid
	}{
		{"valid", ok, ""},
		{"longest kind", with(func(j *job) { j.kind = strings.Repeat("k", 127) }), ""},
		{"empty kind", with(func(j *job) { j.kind = "" }), "kind_length"},
		{"kind of 128 characters", with(func(j *job) { j.kind = strings.Repeat("é", 128) }), "kind_length"},
		{"empty queue", with(func(j *job) { j.queue = "" }), "queue_length"},
		{"queue of 128 characters", with(func(j *job) { j.queue = strings.Repeat("q", 128) }), "queue_length"},
		{"priority 0", with(func(j *job) { j.priority = 0 }), "priority_in_range"},
		{"priority 4", with(func(j *job) { j.priority = 4 }), ""},
		{"priority 5", with(func(j *job) { j.priority = 5 }), "priority_in_range"},
		{"no attempts", with(func(j *job) { j.maxAttempts = 0 }), "max_attempts_is_positive"},
		{"completed without finalized_at", with(func(j *job) { j.state = "completed" }), "finalized_or_finalized_at_null"},
		{"running with finalized_at", with(func(j *job) { j.state = "running"; j.finalized = true }), "finalized_or_finalized_at_null"},
		{"discarded with finalized_at", with(func(j *job) { j.state = "discarded"; j.finalized = true }), ""},
	}
	for _, c := range cases {
		_, err := pool.Exec(ctx, insert, c.job.kind, c.job.maxAttempts, c.job.priority, c.job.queue, c.job.state, c.job.finalized)
		if c.rule == "" {
			require.NoError(t, err, c.name)
			continue
		}
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: %v", c.name, err)
		require.Equal(t, "23514", pgErr.Code, c.name)
		require.Equal(t, c.rule, pgErr.ConstraintName, c.name)
	}

	// Every state, finalized or not: accepted exactly when River's expression says so, and
	// updates are checked as inserts are.
	var mismatches []string
	rows, err := pool.Query(ctx, `
		select s::text, f,
		       (f and s in ('cancelled', 'completed', 'discarded')) or (not f and s not in ('cancelled', 'completed', 'discarded'))
		from unnest(enum_range(null::private.river_job_state)) s, (values (true), (false)) v (f)`)
	require.NoError(t, err)
	type combo struct {
		state     string
		finalized bool
		river     bool
	}
	var combos []combo
	for rows.Next() {
		var c combo
		require.NoError(t, rows.Scan(&c.state, &c.finalized, &c.river))
		combos = append(combos, c)
	}
	require.NoError(t, rows.Err())
	require.Len(t, combos, 16)
	for _, c := range combos {
		_, insErr := pool.Exec(ctx, insert, ok.kind, ok.maxAttempts, ok.priority, ok.queue, c.state, c.finalized)
		_, updErr := pool.Exec(ctx, `update private.river_job set state = $1::private.river_job_state,
			finalized_at = case when $2 then now() end where id = (select min(id) from private.river_job)`, c.state, c.finalized)
		for _, err := range []error{insErr, updErr} {
			if (err == nil) != c.river {
				mismatches = append(mismatches, c.state)
			}
		}
	}
	require.Empty(t, mismatches, "states where the rule and River's expression disagree")
}

// Jobs of a kind are found through an index, for every shape of query that filters or orders
// by kind alone (River's by-kind reads, shared/health.Read across tenants), now that River's
// own index on kind is gone (20261204100200_river_job_without_kind_index.sql): the planner,
// told to avoid sequential scans, must have an index to use, or it falls back to one.
func TestJobsOfAKindAreFoundThroughAnIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `set enable_seqscan = off`)
	require.NoError(t, err)
	for name, query := range map[string]string{
		"health across tenants":    `select count(*) from private.river_job j where j.kind = 'crm_sync'`,
		"River's JobGetByKindMany": `select * from private.river_job where kind = any('{crm_sync}'::text[]) order by id`,
		"River's JobKindList":      `select distinct on (kind) kind from private.river_job where kind > '' order by kind asc limit 100`,
	} {
		rows, err := conn.Query(ctx, `explain (costs off) `+query)
		require.NoError(t, err, name)
		var lines []string
		for rows.Next() {
			var l string
			require.NoError(t, rows.Scan(&l))
			lines = append(lines, l)
		}
		require.NoError(t, rows.Err())
		joined := strings.Join(lines, "\n")
		require.NotContains(t, joined, "Seq Scan", "%s:\n%s", name, joined)
		require.Contains(t, joined, "river_job_kind_tenant_idx", "%s:\n%s", name, joined)
	}
}

// The sync status's rules hold as they did as table checks, now that they are its columns'
// domain checks (20261204100300_sync_status_checks_cached.sql): a write outside them fails
// with check_violation under the rule's name, on insert and on update.
func TestSyncStatusRulesStillHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tenant string
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('Acme') returning id::text`).Scan(&tenant))
	const insert = `insert into private.sync_status (integration, subject, tenant_id, state) values ($1, $2, $3, $4)`
	_, err := pool.Exec(ctx, insert, "crm", "tenant:"+tenant, tenant, "pending")
	require.NoError(t, err)
	for _, c := range []struct {
		name, sql string
		args      []any
		rule      string
	}{
		{"unknown integration", insert, []any{"slack", "x", tenant, "pending"}, "sync_status_integration_check"},
		{"unknown state", insert, []any{"helpdesk", "x", tenant, "lost"}, "sync_status_state_check"},
		{"update to an unknown state", `update private.sync_status set state = $1 where tenant_id = $2`, []any{"done", tenant}, "sync_status_state_check"},
		{"update to an unknown integration", `update private.sync_status set integration = $1 where tenant_id = $2`, []any{"CRM", tenant}, "sync_status_integration_check"},
	} {
		_, err := pool.Exec(ctx, c.sql, c.args...)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: %v", c.name, err)
		require.Equal(t, "23514", pgErr.Code, c.name)
		require.Equal(t, c.rule, pgErr.ConstraintName, c.name)
	}
	for _, state := range []string{"pending", "synced", "retrying", "failed"} {
		_, err := pool.Exec(ctx, `update private.sync_status set state = $1 where tenant_id = $2`, state, tenant)
		require.NoError(t, err, state)
	}
}
