package main

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Ops' repair of the owner's health: when the kept rows drifted from history (here: changed
// behind the triggers' back), the dry run shows both and exits 1 without changing anything;
// --apply recounts them and the owner sees what history says again.
func TestRebuildHealthShowsTheDriftThenRepairsIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, b.url, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(ctx, `insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, applied_at)
		values ('evt_paid', 'invoice.paid', now(), '{}', $1, 'processed', now())`, b.tenant)
	require.NoError(t, err)
	tenant := b.tenant.String()

	code, out, errOut := b.run(t, "rebuild-health", "--tenant", tenant)
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "DRY RUN")
	require.Contains(t, out, "the kept rows agree with history")

	_, err = pool.Exec(ctx, `delete from private.webhook_delivery_counts; update private.job_summary set dead = 0`)
	require.NoError(t, err)
	code, out, errOut = b.run(t, "rebuild-health", "--tenant", tenant)
	require.Equal(t, exitAttention, code, errOut)
	require.Contains(t, out, "the kept rows DIFFER from history")
	require.Regexp(t, `(?s)kept rows\):.*helpdesk\s+1\s+1\s+0\s+-\s+0\s.*history:.*helpdesk\s+1\s+1\s+0\s+-\s+1\s`, out,
		"the owner sees no dead letter, history has one")
	var kept int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from private.webhook_delivery_counts`).Scan(&kept))
	require.Zero(t, kept, "a dry run changes nothing")

	code, out, errOut = b.run(t, "rebuild-health", "--tenant", tenant, "--apply")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "the kept rows agree with history")
	require.Regexp(t, `(?s)kept rows\):.*?stripe webhook[^\n]*\n\s+1\s+1\s+0`, out, "the delivery is counted again")

	code, out, errOut = b.run(t, "rebuild-health", "--all")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "DRY RUN")
	code, _, errOut = b.run(t, "rebuild-health", "--all", "--apply")
	require.Equal(t, exitOK, code, errOut)

	for _, args := range [][]string{{}, {"--tenant", tenant, "--all"}, {"--tenant", uuid.Nil.String()}} {
		code, _, errOut = b.run(t, append([]string{"rebuild-health"}, args...)...)
		require.Equal(t, exitRefused, code, args)
		require.NotEmpty(t, errOut)
	}
}
