-- A CRM push rides on the tenant's waiting push inside private.river_insert_unique, instead of
-- a function of its own that called it (issue 12).
--
-- 20261206300000_crm_sync_rides_a_waiting_push.sql put the look for a waiting push in
-- private.river_insert_crm_sync, which then called private.river_insert_unique: when no push
-- waits (production's usual case, where workers take a push within seconds), a queued CRM job
-- paid a second PL/pgSQL call with its own search_path set and restored. The look now opens
-- private.river_insert_unique (the body of 20261206310400_river_insert_without_count.sql,
-- unchanged after it), and private.river_insert_crm_sync goes: only shared/jobs' deferred
-- insert called it, and no code outside this change's commits did.
--
-- What rides is unchanged: a crm_sync job whose args name the tenant given, for a status
-- (p_integration), when a job of the tenant is 'available' and due and no worker's fetch holds
-- it (FOR KEY SHARE SKIP LOCKED); the status is set pending as for a new job; the answer is
-- false (no job inserted). Every other job is inserted as before.

drop function private.river_insert_crm_sync(text, jsonb, text, smallint, smallint, bytea, integer, text, text, uuid);

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
    if counts and p_kind = 'crm_sync' and p_integration is not null then
        -- A push of the tenant waiting to start carries this change (it pushes the projection
        -- as it is when it runs): river_job_waiting_tenant_idx, locked until the commit so
        -- River's fetch (FOR UPDATE SKIP LOCKED) cannot start it before the change is in.
        perform from private.river_job j
        where j.kind = 'crm_sync' and j.args->>'tenant_id' = p_tenant::text
          and j.state = 'available' and j.scheduled_at <= now()
        limit 1
        for key share of j skip locked;
        if found then
            -- The change's push is pending, as for a new job below: read first, since the
            -- upsert locks the row even when it changes nothing.
            if not exists (select from private.sync_status s where s.integration = p_integration
                    and s.subject = p_subject and s.state = 'pending' and s.attempts = 0) then
                insert into private.sync_status (integration, subject, tenant_id, state, attempts)
                values (p_integration, p_subject, p_tenant, 'pending', 0)
                on conflict (integration, subject) do update
                set state = 'pending', attempts = 0, updated_at = now()
                where (sync_status.state, sync_status.attempts) is distinct from ('pending', 0);
            end if;
            return false;
        end if;
    end if;
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
        returning 1
    ), pending as (
        insert into private.sync_status (integration, subject, tenant_id, state, attempts)
        select p_integration, p_subject, p_tenant, 'pending', 0 from job where p_integration is not null
        on conflict (integration, subject) do update
        set state = 'pending', attempts = 0, updated_at = now()
        where (sync_status.state, sync_status.attempts) is distinct from ('pending', 0)
    ), waiting as (
        -- A new job is available: waiting + 1 (job_summary_track's count for an insert).
        insert into private.job_summary as s (tenant_id, integration, shard, waiting, dead)
        select p_tenant, case p_kind when 'crm_sync' then 'crm' else 'helpdesk' end, my_shard, 1, 0
        from job where counts
        on conflict (tenant_id, integration, shard) do update set
            waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead
    )
    select true into inserted from job;
    return found;
end;
$$;
