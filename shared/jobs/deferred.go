package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivershared/structtag"
	"github.com/riverqueue/river/rivershared/uniquestates"
	"github.com/riverqueue/river/rivertype"
	"github.com/tidwall/sjson"

	"github.com/portal-functions/portal-functions/shared/db"
)

// deferInsert queues the job on a db.Pipe without waiting, through a PL/pgSQL function whose
// plan Postgres keeps (private.river_insert_unique, supabase/migrations/
// 20261204100000_river_insert_one_statement.sql): River's own insert (JobInsertFastMany) is
// planned anew on every call behind a transaction pooler, which cost more than running it. It
// goes with the transaction's next statement or its commit. When the job is new, the same
// statement sets the sync status pending (a duplicate leaves it to the first job, as insert
// does) and counts the job in the job summary, which the insert trigger does for River's own
// inserts. The job is the row River's InsertTx writes for args (same unique key and states, so
// River's own inserts see it as a duplicate and River's workers work it), marked counted;
// onInsert runs when the answer arrives.
func (i *Inserter) deferInsert(ctx context.Context, p *db.Pipe, args river.JobArgs, integration string, tenantID uuid.UUID, subject string) error {
	job, err := uniqueJob(args)
	if err != nil {
		return fmt.Errorf("enqueue %s for %s: %w", args.Kind(), subject, err)
	}
	var inserted bool
	// The integration whose sync status the job sets pending (none: NULL); a pgtype value, as
	// pgx encodes a pointer argument through reflection.
	status := pgtype.Text{String: integration, Valid: integration != ""}
	// A CRM push rides on one of the tenant's that is waiting to start, if any: it pushes the
	// projection as it is when it runs, so it carries this change too; inserted is then false
	// (20261206320000_crm_sync_rides_a_waiting_push.sql).
	p.DeferCall("private.river_insert_unique", &inserted, func() error {
		if inserted && status.Valid && i.onInsert != nil {
			i.onInsert(ctx, integration)
		}
		return nil
	}, job.kind, string(job.args), job.queue, job.priority, job.maxAttempts, job.uniqueKey, job.uniqueStates,
		status, subject, tenantID)
	return nil
}

// job is what River writes for a job without a schedule.
type job struct {
	kind         string
	args         []byte
	queue        string
	priority     int16
	maxAttempts  int16
	uniqueKey    []byte
	uniqueStates int32
}

// uniqueJob computes the row River's InsertTx would write for args, whose InsertOpts must
// ask for uniqueness by args alone (ours do: insertOpts), in River v0.51's way
// (river/internal/dbunique): the sha256 of "&kind=<kind>&args=<the unique fields, sorted by
// JSON key, as a JSON object>", and the states as River's bitmask.
func uniqueJob(args river.JobArgs) (job, error) {
	opts := river.InsertOpts{}
	if a, ok := args.(river.JobArgsWithInsertOpts); ok {
		opts = a.InsertOpts()
	}
	u := opts.UniqueOpts
	if !u.ByArgs || u.ByPeriod != 0 || u.ByQueue || u.ExcludeKind || !opts.ScheduledAt.IsZero() || opts.Pending || len(opts.Tags) > 0 || len(opts.Metadata) > 0 {
		return job{}, fmt.Errorf("%s: only jobs unique by args, unscheduled, without tags or metadata can be written without River", args.Kind())
	}
	if opts.Queue == "" || opts.MaxAttempts <= 0 {
		return job{}, fmt.Errorf("%s: its InsertOpts must name the queue and the attempts", args.Kind())
	}
	encoded, err := json.Marshal(args)
	if err != nil {
		return job{}, fmt.Errorf("encode args: %w", err)
	}
	fields, err := structtag.SortedFieldsWithTag(args, "unique")
	if err != nil {
		return job{}, fmt.Errorf("unique fields: %w", err)
	}
	if len(fields) == 0 {
		return job{}, fmt.Errorf("%s: no unique fields", args.Kind())
	}
	values := structtag.ExtractValues(encoded, fields)
	unique := make([]byte, 0, len(encoded))
	for n, key := range fields {
		if values[n] == "undefined" {
			continue
		}
		if unique, err = sjson.SetRawBytesOptions(unique, key, []byte(values[n]), &sjson.Options{ReplaceInPlace: true}); err != nil {
			return job{}, fmt.Errorf("unique args: %w", err)
		}
	}
	key := sha256.Sum256([]byte("&kind=" + args.Kind() + "&args=" + string(unique)))
	states := u.ByState
	if len(states) == 0 {
		states = rivertype.UniqueOptsByStateDefault()
	}
	return job{
		kind:         args.Kind(),
		args:         encoded,
		queue:        opts.Queue,
		priority:     int16(max(opts.Priority, 1)),
		maxAttempts:  int16(opts.MaxAttempts),
		uniqueKey:    key[:],
		uniqueStates: int32(uniquestates.UniqueStatesToBitmask(states)),
	}, nil
}
