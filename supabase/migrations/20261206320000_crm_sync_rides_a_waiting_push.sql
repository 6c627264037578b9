-- A CRM push queued while the tenant already has one waiting to start rides on that one instead
-- of adding a job (issue 12).
--
-- A crm_sync job pushes the tenant's projection as it is when the job runs, not as it was when
-- it was queued (shared/crm Worker.Work), and is done once HubSpot holds the version it was
-- queued for or a newer one. So while a tenant's push is 'available' (due, not yet taken by a
-- worker), a newer change of the same tenant is carried by it: a second job would push the same
-- projection again. Stripe sends a tenant's events of one change in the same second
-- (customer.subscription.updated, invoice.paid, ...), and a retry storm or a month-start
-- renewal burst sends many more: each CRM-visible change queued a job of its own (an insert
-- into river_job with its indexes, the unique index's check, the job summary's count).
--
-- The waiting job is locked (FOR KEY SHARE) until the delivery commits, so River's fetch, which
-- takes jobs FOR UPDATE SKIP LOCKED, cannot start it before the change it now carries is
-- committed: once a worker has it, it reads the projection with this change. A job a worker
-- holds (its fetch in progress, SKIP LOCKED here) or has taken ('running'), or one that waits
-- for a later time ('scheduled', 'retryable', or 'available' with a future scheduled_at: it
-- could be hours away) carries nothing: a new job is queued as before.
--
-- The tenant's CRM sync status is set pending (attempts 0) as for a new job: a status left
-- 'retrying' by the waiting job's earlier attempts now waits for a push of the newest change.
-- The answer is false when the push rode on a waiting one (no job inserted, so the caller
-- nudges no worker: the waiting job was nudged when it was queued). Only a crm_sync job whose
-- args name the tenant given, for a status (p_integration), rides; every other job is inserted
-- as before. The look opens private.river_insert_unique (the body of
-- 20261206310400_river_insert_without_count.sql after it, unchanged), so a push with nothing
-- waiting pays no second PL/pgSQL call (BenchmarkEnqueueCRMSyncInPipe/pending: 726,988
-- instructions with the look in a function of its own that called this one, 701,238 here).

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
