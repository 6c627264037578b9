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
-- Answers false when the push rode on a waiting one (no job inserted, so the caller nudges no
-- worker: the waiting job was nudged when it was queued), else what
-- private.river_insert_unique answers. Only
-- shared/jobs' deferred CRM insert calls it; every other insert is unchanged.

create function private.river_insert_crm_sync(
    p_kind text, p_args jsonb, p_queue text, p_priority smallint, p_max_attempts smallint,
    p_unique_key bytea, p_unique_states integer,
    p_integration text, p_subject text, p_tenant uuid)
returns boolean
language plpgsql set search_path = ''
as $$
begin
    if p_kind = 'crm_sync' and p_integration is not null and p_args->>'tenant_id' = p_tenant::text then
        -- river_job_waiting_tenant_idx (kind, tenant, created_at) where the job is waiting.
        perform from private.river_job j
        where j.kind = 'crm_sync' and j.args->>'tenant_id' = p_tenant::text
          and j.state = 'available' and j.scheduled_at <= now()
        limit 1
        for key share of j skip locked;
        if found then
            -- The change's push is pending, as private.river_insert_unique marks a new job's
            -- (attempts count the attempts at the newest change): read first, since the
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
    return private.river_insert_unique(p_kind, p_args, p_queue, p_priority, p_max_attempts,
        p_unique_key, p_unique_states, p_integration, p_subject, p_tenant);
end;
$$;
revoke all on function private.river_insert_crm_sync(text, jsonb, text, smallint, smallint, bytea, integer, text, text, uuid) from public;
