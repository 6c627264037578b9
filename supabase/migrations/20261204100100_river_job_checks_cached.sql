-- River's CHECK constraints on private.river_job, kept, but no longer parsed for every
-- statement that writes a job (issue 12).
--
-- Postgres keeps a table's CHECK constraints as node strings (pg_constraint.conbin) and, for
-- every statement that inserts or updates rows of the table, reads each one back
-- (stringToNode), plans it (eval_const_expressions) and compiles it, before the first row. For
-- river_job's five (5.6 KB of node text) that was about 200k instructions per queued job,
-- measured with callgrind on a throwaway PostgreSQL 15 (BenchmarkEnqueueCRMSyncInPipe/pending:
-- the whole transaction cost 1.00M with them, 0.80M with the five dropped): a fifth of the
-- job's cost, and paid again by each of River's updates of the job (fetch, completion).
--
-- Two changes, the same rule for every row either way:
-- - The four single-column checks become the checks of a domain per column. A domain's
--   constraints are read once per backend into the type cache and only compiled per
--   statement. Same names (kind_length, queue_length, priority_in_range,
--   max_attempts_is_positive), same conditions, same SQLSTATE 23514 on a violation. A domain
--   without constraints is binary-compatible with its base type, so the columns change type
--   without rewriting the table or rebuilding its indexes; the constraints are then added to
--   the domains, which checks the existing rows (a scan, no rewrite). Clients see the base
--   types: Postgres describes a domain column by its base type, so River's queries (which
--   name text[] and smallint[] parameters and scan strings and int16s) are unchanged.
-- - The one check over two columns, finalized_or_finalized_at_null, stays a table check with
--   the same name, written as one comparison of two booleans with the states as one array
--   constant (761 bytes of node text instead of 2,141). It means the same: state is not null,
--   so "(finalized_at is null and state not in X) or (finalized_at is not null and state in
--   X)" holds exactly when "finalized_at is not null" equals "state in X".
--
-- River's migrations after version 008 (cmd/rivermigrations renders them for this schema) that
-- drop or re-add one of the four single-column constraints by name on river_job, or change
-- those columns' types, must be adapted to the domains when rendered.

create domain private.river_job_kind_value as text;
create domain private.river_job_queue_value as text;
create domain private.river_job_priority_value as smallint;
create domain private.river_job_max_attempts_value as smallint;

-- The job summary's triggers name river_job's columns in their WHEN clauses, which a column's
-- type change refuses: they are dropped and created again as they were, in this transaction
-- (its lock on river_job keeps every write out meanwhile, so no change goes uncounted).
drop trigger job_summary_insert on private.river_job;
drop trigger job_summary_update on private.river_job;
drop trigger job_summary_delete on private.river_job;

alter table private.river_job
    alter column kind type private.river_job_kind_value,
    alter column queue type private.river_job_queue_value,
    alter column priority type private.river_job_priority_value,
    alter column max_attempts type private.river_job_max_attempts_value;

alter domain private.river_job_kind_value
    add constraint kind_length check (char_length(value) > 0 and char_length(value) < 128);
alter domain private.river_job_queue_value
    add constraint queue_length check (char_length(value) > 0 and char_length(value) < 128);
alter domain private.river_job_priority_value
    add constraint priority_in_range check (value >= 1 and value <= 4);
alter domain private.river_job_max_attempts_value
    add constraint max_attempts_is_positive check (value > 0);

alter table private.river_job
    drop constraint kind_length,
    drop constraint queue_length,
    drop constraint priority_in_range,
    drop constraint max_attempts_is_positive,
    drop constraint finalized_or_finalized_at_null,
    add constraint finalized_or_finalized_at_null
        check ((finalized_at is not null) = (state = any ('{cancelled,completed,discarded}')));

create trigger job_summary_insert after insert on private.river_job
    for each row when (new.kind in ('crm_sync', 'helpdesk_ticket') and new.counted is null)
    execute function private.job_summary_track();
create trigger job_summary_update after update of state, errors, metadata on private.river_job
    for each row when (new.kind in ('crm_sync', 'helpdesk_ticket') and (
        (old.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))
            <> (new.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))
        or (old.state in ('discarded', 'cancelled') and not old.metadata ? 'resolved_at')
            <> (new.state in ('discarded', 'cancelled') and not new.metadata ? 'resolved_at')
        or coalesce(cardinality(new.errors), 0) > coalesce(cardinality(old.errors), 0)))
    execute function private.job_summary_track();
create trigger job_summary_delete after delete on private.river_job
    for each row when (old.kind in ('crm_sync', 'helpdesk_ticket') and old.state <> 'completed')
    execute function private.job_summary_track();
