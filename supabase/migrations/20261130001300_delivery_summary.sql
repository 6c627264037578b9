-- What GET /v1/account shows, kept in the writes instead of aggregated from history on every
-- read (issue 13). Before this, the account's sync summary grouped every sync_status row of the
-- tenant and the owner's health section scanned every River job of the tenant (unnesting each
-- job's errors): 314 ms for a tenant with 100,000 tickets, growing with its history.
--
-- Now three small tables hold the answer, maintained by row triggers in the very statement
-- (so the very transaction) that changes a sync status or a job:
--   private.sync_summary   per tenant and integration: subjects by sync state, last success
--                          and last attempt (the portal's "syncs" and the failing subjects);
--   private.job_summary    per tenant and integration: jobs waiting and jobs dead-lettered;
--   private.job_attempts   per tenant, integration and 5-minute bucket: attempts that
--                          succeeded and failed, pruned past 8 days (the health window is at
--                          most 7), so a 24-hour window is at most 289 rows whatever the history.
--
-- Why triggers: River changes a job's state in its own queries (fetch, batch completion,
-- retry scheduling, rescue, cleaner deletes), which our code never sees; only a trigger on
-- private.river_job follows all of them exactly. And the old state of a sync_status row, which
-- a counter per state needs, is only known to a row trigger (an upsert's RETURNING sees the
-- new row only). The triggers' WHEN clauses are evaluated before any function is called, so
-- the transitions that change no count (a fetch: available -> running; a snooze: running ->
-- scheduled; jobs of other kinds, such as a billing refresh) cost nothing. On the webhook's
-- path (one crm_sync insert and one sync_status upsert) they add two single-row upserts in the
-- same statements: no extra round trip.
--
-- Ops can still recount from history: shared/health.Read (reconcile health) reads River's jobs
-- and the sync status as before, and the test TestOwnerHealthKeptInWritesEqualsARecountFromHistory
-- checks these rows against that recount under concurrent random job transitions.

-- No job or sync status may change while the tables are filled from history and the triggers
-- are created, or a change in between would be counted nowhere.
lock table private.river_job, private.sync_status in share row exclusive mode;

create table private.sync_summary (
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    integration text not null check (integration in ('crm', 'helpdesk')),
    pending integer not null default 0,
    retrying integer not null default 0,
    failed integer not null default 0,
    synced integer not null default 0,
    last_success_at timestamptz,
    last_attempt_at timestamptz,
    primary key (tenant_id, integration)
);

-- No foreign key on the job tables: a job's tenant is a value in River's args, and a summary
-- must never make River's insert fail.
create table private.job_summary (
    tenant_id uuid not null,
    integration text not null,
    waiting integer not null default 0,
    dead integer not null default 0,
    primary key (tenant_id, integration)
);

create table private.job_attempts (
    tenant_id uuid not null,
    integration text not null,
    bucket timestamptz not null,
    succeeded integer not null default 0,
    failed integer not null default 0,
    primary key (tenant_id, integration, bucket)
);

alter table private.sync_summary enable row level security;
alter table private.job_summary enable row level security;
alter table private.job_attempts enable row level security;
revoke all on private.sync_summary, private.job_summary, private.job_attempts from public, anon, authenticated;
-- The portal reads the sync summary as the user (public.portal_sync_summary), like sync_status.
grant select on private.sync_summary to authenticated;
create policy sync_summary_select_member on private.sync_summary for select to authenticated
    using (tenant_id in (select private.current_tenant_ids()));

-- sync_summary from sync_status: the old state's count goes down, the new state's goes up; the
-- times only move forward (shared/jobs writes them with greatest(), so a subject's own times
-- never go back either, and the maximum over subjects equals these).
create function private.sync_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
begin
    if tg_op = 'UPDATE' and old.tenant_id = new.tenant_id and old.integration = new.integration then
        update private.sync_summary s set
            pending = s.pending + (new.state = 'pending')::int - (old.state = 'pending')::int,
            retrying = s.retrying + (new.state = 'retrying')::int - (old.state = 'retrying')::int,
            failed = s.failed + (new.state = 'failed')::int - (old.state = 'failed')::int,
            synced = s.synced + (new.state = 'synced')::int - (old.state = 'synced')::int,
            last_success_at = greatest(s.last_success_at, new.last_success_at),
            last_attempt_at = greatest(s.last_attempt_at, new.last_attempt_at)
        where s.tenant_id = new.tenant_id and s.integration = new.integration;
        return null;
    end if;
    if tg_op in ('UPDATE', 'DELETE') then
        -- Update only: a row deleted by the tenant's cascade must not come back.
        update private.sync_summary s set
            pending = s.pending - (old.state = 'pending')::int,
            retrying = s.retrying - (old.state = 'retrying')::int,
            failed = s.failed - (old.state = 'failed')::int,
            synced = s.synced - (old.state = 'synced')::int
        where s.tenant_id = old.tenant_id and s.integration = old.integration;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into private.sync_summary as s
            (tenant_id, integration, pending, retrying, failed, synced, last_success_at, last_attempt_at)
        values (new.tenant_id, new.integration, (new.state = 'pending')::int, (new.state = 'retrying')::int,
                (new.state = 'failed')::int, (new.state = 'synced')::int, new.last_success_at, new.last_attempt_at)
        on conflict (tenant_id, integration) do update set
            pending = s.pending + excluded.pending,
            retrying = s.retrying + excluded.retrying,
            failed = s.failed + excluded.failed,
            synced = s.synced + excluded.synced,
            last_success_at = greatest(s.last_success_at, excluded.last_success_at),
            last_attempt_at = greatest(s.last_attempt_at, excluded.last_attempt_at);
    end if;
    return null;
end;
$$;

create trigger sync_summary_insert after insert on private.sync_status
    for each row execute function private.sync_summary_track();
create trigger sync_summary_update after update on private.sync_status
    for each row when (old.state is distinct from new.state
                       or old.last_success_at is distinct from new.last_success_at
                       or old.last_attempt_at is distinct from new.last_attempt_at
                       or old.tenant_id is distinct from new.tenant_id
                       or old.integration is distinct from new.integration)
    execute function private.sync_summary_track();
create trigger sync_summary_delete after delete on private.sync_status
    for each row execute function private.sync_summary_track();

-- One attempt of a push at time at: into its 5-minute bucket. The first attempt of a new bucket
-- also deletes the tenant's buckets past 8 days, so the table stays bounded without a cron.
create function private.job_attempts_add(p_tenant uuid, p_integration text, p_at timestamptz, p_succeeded integer, p_failed integer)
    returns void language plpgsql set search_path = ''
as $$
declare
    created boolean;
begin
    if p_at is null or p_at < now() - interval '8 days' then
        return;
    end if;
    insert into private.job_attempts as a (tenant_id, integration, bucket, succeeded, failed)
    values (p_tenant, p_integration, date_bin('5 minutes', p_at, timestamptz '2000-01-01 00:00:00+00'), p_succeeded, p_failed)
    on conflict (tenant_id, integration, bucket) do update set
        succeeded = a.succeeded + excluded.succeeded,
        failed = a.failed + excluded.failed
    returning (xmax = 0) into created;
    if created then
        delete from private.job_attempts
        where tenant_id = p_tenant and integration = p_integration and bucket < now() - interval '8 days';
    end if;
end;
$$;

-- job_summary and job_attempts from River's job rows (push kinds only). A job is waiting
-- (available, pending, retryable, running, scheduled), dead (discarded or cancelled, and not
-- resolved by ops: metadata resolved_at, shared/jobs.Resolve) or neither. Every new entry in errors is a failed attempt at its "at"; a move into completed
-- is a successful attempt at finalized_at: the same definitions shared/health.Read recounts.
create function private.job_summary_track() returns trigger
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
begin
    if tg_op = 'DELETE' then j := old; else j := new; end if;
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
        if tg_op = 'DELETE' then
            update private.job_summary s set waiting = s.waiting + d_waiting, dead = s.dead + d_dead
            where s.tenant_id = tenant and s.integration = integ;
        else
            insert into private.job_summary as s (tenant_id, integration, waiting, dead)
            values (tenant, integ, d_waiting, d_dead)
            on conflict (tenant_id, integration) do update set
                waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead;
        end if;
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

-- The WHEN clauses keep every other job and every transition that changes no count (fetch,
-- snooze, a unique insert that found its duplicate) out of PL/pgSQL entirely.
create trigger job_summary_insert after insert on private.river_job
    for each row when (new.kind in ('crm_sync', 'helpdesk_ticket'))
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

-- Fill the tables from history once.
insert into private.sync_summary (tenant_id, integration, pending, retrying, failed, synced, last_success_at, last_attempt_at)
select tenant_id, integration,
       count(*) filter (where state = 'pending'), count(*) filter (where state = 'retrying'),
       count(*) filter (where state = 'failed'), count(*) filter (where state = 'synced'),
       max(last_success_at), max(last_attempt_at)
from private.sync_status
group by tenant_id, integration;

insert into private.job_summary (tenant_id, integration, waiting, dead)
select (args->>'tenant_id')::uuid, case kind when 'crm_sync' then 'crm' else 'helpdesk' end,
       count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
       count(*) filter (where state in ('discarded', 'cancelled') and not metadata ? 'resolved_at')
from private.river_job
where kind in ('crm_sync', 'helpdesk_ticket')
  and args->>'tenant_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
group by 1, 2;

insert into private.job_attempts (tenant_id, integration, bucket, succeeded, failed)
select tenant_id, integration, date_bin('5 minutes', at, timestamptz '2000-01-01 00:00:00+00'), sum(ok), sum(bad)
from (
    select (j.args->>'tenant_id')::uuid as tenant_id, case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end as integration,
           (e->>'at')::timestamptz as at, 0 as ok, 1 as bad
    from private.river_job j, unnest(j.errors) e
    where j.kind in ('crm_sync', 'helpdesk_ticket')
      and j.args->>'tenant_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
    union all
    select (j.args->>'tenant_id')::uuid, case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end, j.finalized_at, 1, 0
    from private.river_job j
    where j.kind in ('crm_sync', 'helpdesk_ticket') and j.state = 'completed'
      and j.args->>'tenant_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
) attempts
where at >= now() - interval '8 days'
group by 1, 2, 3;

-- The oldest waiting job of a tenant and kind, the one health figure a counter cannot keep: a
-- probe of this partial index (limit 1), which holds waiting jobs only.
create index river_job_waiting_tenant_idx on private.river_job (kind, (args->>'tenant_id'), created_at)
    where state in ('available', 'pending', 'retryable', 'running', 'scheduled');

-- The tenant's deliveries in the health window: a range of this index, never the tenant's
-- whole inbox (stripe_events_tenant_created_idx orders by Stripe's created, not received_at).
create index stripe_events_tenant_received_idx on private.stripe_events (tenant_id, received_at);

-- The account's sync summary now reads the kept rows: one primary-key probe per integration.
create or replace view public.portal_sync_summary with (security_invoker = true) as
select
    s.tenant_id,
    s.integration,
    case when s.failed > 0 then 'failed' when s.retrying > 0 then 'retrying'
         when s.pending > 0 then 'pending' else 'synced' end as state,
    case s.integration
        when 'crm' then case
            when s.failed > 0 then 'CRM update failed; our team has been alerted'
            when s.retrying > 0 then 'CRM update failed, we are retrying'
            when s.pending > 0 then case
                when b.last_payment_at is not null
                     and b.last_payment_at >= coalesce(s.last_success_at, '-infinity'::timestamptz)
                then 'payment received, syncing to CRM'
                else 'syncing to CRM' end
            else 'CRM up to date' end
        else case
            when s.failed > 0 then 'a support ticket could not be delivered; our team has been alerted'
            when s.retrying > 0 then 'support ticket delivery failed, we are retrying'
            when s.pending > 0 then 'support ticket pending'
            else 'support tickets delivered' end
    end as message,
    (s.pending + s.retrying)::bigint as waiting,
    s.failed::bigint as failed,
    s.last_success_at,
    s.last_attempt_at
from private.sync_summary s
left join private.billing_accounts b on b.tenant_id = s.tenant_id
where s.pending + s.retrying + s.failed + s.synced > 0;
