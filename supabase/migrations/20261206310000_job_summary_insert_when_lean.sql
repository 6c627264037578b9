-- The job summary's insert trigger decides with a WHEN that costs next to nothing to read, and
-- the function checks the kind itself (issue 12).
--
-- Postgres keeps a trigger's WHEN as a node string (pg_trigger.tgqual) and, for every
-- statement that writes the table, reads it back (stringToNode), plans it and compiles it
-- before the first row, whether or not the trigger then fires. job_summary_insert's WHEN
-- ("new.kind in ('crm_sync', 'helpdesk_ticket') and new.counted is null") was about 38k
-- backend instructions per queued job of the webhook, which private.river_insert_unique
-- marks counted so that the trigger never fires for it: callgrind on a throwaway PostgreSQL 15,
-- BenchmarkEnqueueCRMSyncInPipe/pending, 688k -> 661k backend instructions per transaction
-- with a new job.
--
-- Now the WHEN is "new.counted is null" alone, and the kind is checked where it costs nothing
-- per statement:
-- - private.river_insert_unique marks counted = true every job it writes that is not left to
--   the trigger: a push it counted itself (as before) and a job of a kind the summary does not
--   count (billing_refresh, queued in the webhook's transaction), which no trigger needs to see.
--   A push whose args name another tenant stays counted null, as before, for the trigger.
-- - private.job_summary_track returns at once for a kind the summary does not count. The
--   update and delete triggers' WHENs still filter by kind; an insert by another writer
--   (River's InsertTx of a billing refresh, a seeder's COPY of another kind) now calls the
--   function, which returns before it reads anything: the same counts, a trigger call on
--   those paths.
-- Same counts either way: a job is counted by exactly one of its writer and the trigger.

create or replace function private.job_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    j private.river_job;
    tenant uuid;
    integ text;
    d_waiting integer := 0;
    d_dead integer := 0;
    old_errors integer := 0;
    e jsonb;
    my_shard integer;
    tries integer := 1;
begin
    if tg_op = 'DELETE' then j := old; else j := new; end if;
    if j.kind not in ('crm_sync', 'helpdesk_ticket') then
        -- Not a push: nothing to count (job_summary_insert's WHEN no longer filters by kind).
        return null;
    end if;
    if coalesce(j.args->>'tenant_id', '') !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
        return null;
    end if;
    tenant := (j.args->>'tenant_id')::uuid;
    integ := case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end;
    if tg_op <> 'INSERT' then
        d_waiting := d_waiting - (old.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead - (old.state in ('discarded', 'cancelled') and not old.metadata ? 'resolved_at')::int;
        old_errors := coalesce(cardinality(old.errors), 0);
    end if;
    if tg_op <> 'DELETE' then
        d_waiting := d_waiting + (new.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead + (new.state in ('discarded', 'cancelled') and not new.metadata ? 'resolved_at')::int;
    end if;
    if d_waiting <> 0 or d_dead <> 0 then
        -- The first shard whose advisory lock (second key: the shard) this transaction gets
        -- without waiting (no foreign key here, so a delete may add its negative change to a
        -- new row too).
        my_shard := txid_current() % 64;
        while not pg_try_advisory_xact_lock(hashtext('private.summary_shard'), my_shard) loop
            if tries = 64 then
                perform pg_advisory_xact_lock(hashtext('private.summary_shard'), my_shard);
                exit;
            end if;
            tries := tries + 1;
            my_shard := (my_shard + 1) % 64;
        end loop;
        insert into private.job_summary as s (tenant_id, integration, shard, waiting, dead)
        values (tenant, integ, my_shard, d_waiting, d_dead)
        on conflict (tenant_id, integration, shard) do update set
            waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead;
    end if;
    if tg_op <> 'DELETE' then
        if coalesce(cardinality(new.errors), 0) > old_errors then
            foreach e in array new.errors[old_errors + 1:] loop
                perform private.job_attempts_add(tenant, integ, (e->>'at')::timestamptz, 0, 1);
            end loop;
        end if;
        if new.state = 'completed' and (tg_op = 'INSERT' or old.state <> 'completed') then
            perform private.job_attempts_add(tenant, integ, new.finalized_at, 1, 0);
        end if;
    end if;
    return null;
end;
$$;

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
            p_unique_key, p_unique_states::bit(8),
            case when counts or p_kind not in ('crm_sync', 'helpdesk_ticket') then true end)
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

drop trigger job_summary_insert on private.river_job;
create trigger job_summary_insert after insert on private.river_job
    for each row when (new.counted is null)
    execute function private.job_summary_track();

comment on column private.river_job.counted is
    'true: the writer (private.river_insert_unique) took care of private.job_summary itself (counted the push, or the kind is not counted); null: the insert trigger decides';
