-- A push queued for a subject whose sync status is already pending (with no attempt yet) leaves
-- the status row as it is, instead of writing a new version of it that changes nothing but
-- updated_at (issue 12).
--
-- In the side-by-side harness (cmd/dev -no-workers) every CRM push after a tenant's first finds
-- its status pending; in production that happens whenever a tenant's events come faster than
-- its pushes. The update cost a new row version, its CHECKs and the trigger
-- sync_summary_update's WHEN read back and planned, for no change in any count: callgrind on a
-- throwaway PostgreSQL 15, BenchmarkEnqueueCRMSyncInPipe/pending, 0.80M -> 0.70M backend
-- instructions per transaction with a new job. A status in any other state (synced, retrying,
-- failed, or pending with attempts counted) is set pending with attempts 0 as before.
--
-- Kept: the upsert still locks the existing row (ON CONFLICT DO UPDATE locks the row before it
-- evaluates its WHERE, on the row's latest version), so a worker's concurrent update of the
-- same status is ordered with this one exactly as before: if the worker commits "synced"
-- first, this statement sees "synced" and sets it pending again.
-- Changed: updated_at of a pending status is the time it became pending, no longer the time of
-- the latest push queued for it (nothing reads it; shared/jobs.markPending, River's path, does
-- the same, so both writers agree).

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
