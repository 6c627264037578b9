package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// sampleEvent decodes events/<name> strictly into the function's input, so a sample cannot
// carry a field the function would silently ignore.
func sampleEvent(t *testing.T, name string) reconcile.Request {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "events", name))
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var req reconcile.Request
	require.NoError(t, dec.Decode(&req), name)
	return req
}

// ReconcileFunction, built from its definition on the real database, answers its sample
// events as `sam local invoke` would: the dry run reports the tenant's ticket that never
// reached the helpdesk, the apply enqueues its push once (a second apply adds nothing), and
// the unscoped event is refused with a ScopeError before anything is read.
func TestFunctionAnswersItsSampleEvents(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../events/reconcile*.json")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"reconcile-apply.json", "reconcile-dry-run.json", "reconcile-unscoped.json"},
		func() []string {
			names := make([]string, len(files))
			for i, f := range files {
				names[i] = filepath.Base(f)
			}
			return names
		}(), "a new sample needs a case here")

	b := setup(t)
	ctx := context.Background()
	dry := sampleEvent(t, "reconcile-dry-run.json")
	tenant := uuid.MustParse(dry.TenantID)
	_, err = b.pool.Exec(ctx, `insert into public.tenants (id, name) values ($1, 'Sample Co')`, tenant)
	require.NoError(t, err)
	ticket := b.ticket(t, tenant, "never reached the helpdesk")
	_, err = b.pool.Exec(ctx, `update public.tickets set created_at = $1::date + interval '10 hours' where id = $2`, dry.From, ticket)
	require.NoError(t, err)
	handler, err := reconcile.Function.Build(ctx, function.Deps{Pool: b.pool, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}, reconcile.Config{})
	require.NoError(t, err)

	rep, err := handler(ctx, dry)
	require.NoError(t, err)
	require.True(t, rep.DryRun)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindHelpdeskTicket, Found: 1, Enqueued: 1}, count(rep, reconcile.KindHelpdeskTicket))
	require.Zero(t, b.allJobs(t), "the dry run changes nothing")

	apply := sampleEvent(t, "reconcile-apply.json")
	require.Equal(t, dry.TenantID, apply.TenantID, "the samples are about the same tenant")
	for _, want := range []reconcile.Count{
		{Kind: reconcile.KindHelpdeskTicket, Found: 1, Enqueued: 1},
		{Kind: reconcile.KindHelpdeskTicket, Found: 1, Fine: 1},
	} {
		rep, err = handler(ctx, apply)
		require.NoError(t, err)
		require.False(t, rep.DryRun)
		require.Equal(t, want, count(rep, reconcile.KindHelpdeskTicket))
		require.Equal(t, 1, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": ticket.String()}))
	}

	rep, err = handler(ctx, sampleEvent(t, "reconcile-unscoped.json"))
	require.ErrorIs(t, err, reconcile.ErrUnscoped)
	var se *reconcile.ScopeError
	require.ErrorAs(t, err, &se, "Lambda reports the refusal as a ScopeError")
	require.Nil(t, rep)
	require.Equal(t, 1, b.allJobs(t))
}
