-- A job queued by private.river_insert_unique (the webhook's CRM push, a ticket's helpdesk push)
-- is one statement: the job, its count in the job summary and its pending sync status (issue 12).
--
-- Before: the insert into private.river_job, whose AFTER ROW trigger job_summary_insert called
-- private.job_summary_track (a queued trigger event, the row fetched again, a PL/pgSQL call
-- with its own upsert statement), then a second statement for the sync status upsert. Each
-- statement pays its executor start-up (river_job's indexes opened, its CHECK constraints and
-- the triggers' WHEN parsed again), and the trigger's upsert paid its own.
--
-- Now the three writes are data-modifying CTEs of one statement: the job; when it is new, the
-- subject's sync status set pending (as before; a duplicate leaves it to the first job) and
-- the job counted as waiting in private.job_summary, on the shard that
-- private.job_summary_track would have picked (the first shard whose advisory lock the
-- transaction gets without waiting, tried from txid % 64: the lock is taken before the
-- statement, so a duplicate holds a shard it did not need, which only makes that shard look busy
-- to other writers until the commit). The job's row says it was counted (counted = true) and the
-- insert trigger skips such rows by its WHEN on the row's own columns, as
-- 20261203001000_webhook_fewer_statements.sql did for the delivery counter.
--
-- The trigger stays for every other writer: River's own InsertTx (reconcile, ticket creation
-- outside a db.Pipe, River's tests), COPY by the growth seeder, ops. They leave counted null.
-- River's updates and deletes of any job are counted by job_summary_update and
-- job_summary_delete as before, whoever inserted the job. The function counts only what the
-- trigger would count, and with the trigger's definitions: a crm_sync or helpdesk_ticket job
-- whose args' tenant_id is the tenant given (always so for shared/jobs' callers; otherwise it
-- leaves counted null and the trigger decides, with its own tenant check).
--
-- River's queries name their columns (sqlc expands River's "select *" when River is built), so
-- the extra column is invisible to River: its inserts leave it null, its updates keep it.
--
-- A push queued for a subject whose sync status is already pending (with no attempt yet) leaves
-- the status row as it is, instead of writing a new version of it that changes nothing but
-- updated_at (issue 12).
--
-- In the side-by-side harness (cmd/dev -no-workers) every CRM push after a tenant's first finds
-- its status pending; in production that happens whenever a tenant's events come faster than
-- its pushes. The update cost a new row version, its CHECKs and the trigger
-- sync_summary_update's WHEN read back and planned, for no change in any count: callgrind on a
-- throwaway PostgreSQL 15, BenchmarkEnqueueCRMSyncInPipe/pending, 0.80M -> 0.70M backend
-- instructions per transaction with a new job (with the domain checks of the migrations after
-- this one). A status in any other state (synced, retrying,
-- failed, or pending with attempts counted) is set pending with attempts 0 as before.
--
-- Kept: the upsert still locks the existing row (ON CONFLICT DO UPDATE locks the row before it
-- evaluates its WHERE, on the row's latest version), so a worker's concurrent update of the
-- same status is ordered with this one exactly as before: if the worker commits "synced"
-- first, this statement sees "synced" and sets it pending again.
-- Changed: updated_at of a pending status is the time it became pending, no longer the time of
-- the latest push queued for it (nothing reads it; shared/jobs.markPending, River's path, does
-- the same, so both writers agree).

alter table private.river_job add column counted boolean;
comment on column private.river_job.counted is
    'true: the writer (private.river_insert_unique) counted the job in private.job_summary itself; null: the insert trigger counted it (or it is not a push)';

create or replace function private.river_insert_unique(
    p_kind text, p_args jsonb, p_queue text, p_priority smallint, p_max_attempts smallint,
    p_unique_key bytea, p_unique_states integer,
    p_integration text, p_subject text, p_tenant uuid)
returns boolean
language plpgsql set search_path = ''
as $$
declare
    counts constant boolean := coalesce(p_kind in ('crm_sync', 'helpdesk_ticket')
        and p_args->>'tenant_id' = p_tenant::text, false);
    my_shard integer;
    tries integer := 1;
    inserted boolean;
begin
    if counts then
        -- private.job_summary_track's shard (20261203005000_summary_shard_locks_bounded.sql).
        my_shard := txid_current() % 64;
        while not pg_try_advisory_xact_lock(hashtext('private.summary_shard'), my_shard) loop
            if tries = 64 then
                perform pg_advisory_xact_lock(hashtext('private.summary_shard'), my_shard);
                exit;
            end if;
            tries := tries + 1;
            my_shard := (my_shard + 1) % 64;
        end loop;
    end if;
    with job as (
        insert into private.river_job (args, kind, max_attempts, metadata, priority, queue, state, tags,
            unique_key, unique_states, counted)
        values (p_args, p_kind, p_max_attempts, '{}', p_priority, p_queue, 'available', '{}',
            p_unique_key, p_unique_states::bit(8), case when counts then true end)
        on conflict (unique_key)
            where unique_key is not null and unique_states is not null
                and private.river_job_state_in_bitmask(unique_states, state)
            do nothing
        returning kind
    ), pending as (
        insert into private.sync_status (integration, subject, tenant_id, state, attempts)
        select p_integration, p_subject, p_tenant, 'pending', 0 from job where p_integration is not null
        on conflict (integration, subject) do update
        set state = 'pending', attempts = 0, updated_at = now()
        where (sync_status.state, sync_status.attempts) is distinct from ('pending', 0)
    ), waiting as (
        -- A new job is available: waiting + 1 (job_summary_track's count for an insert).
        insert into private.job_summary as s (tenant_id, integration, shard, waiting, dead)
        select p_tenant, case job.kind when 'crm_sync' then 'crm' else 'helpdesk' end, my_shard, 1, 0
        from job where counts
        on conflict (tenant_id, integration, shard) do update set
            waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead
    )
    select count(*) > 0 into inserted from job;
    return inserted;
end;
$$;

-- The insert trigger counts every other writer's jobs.
drop trigger job_summary_insert on private.river_job;
create trigger job_summary_insert after insert on private.river_job
    for each row when (new.kind in ('crm_sync', 'helpdesk_ticket') and new.counted is null)
    execute function private.job_summary_track();
