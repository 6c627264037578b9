-- The owner's webhook health from kept counters instead of a count over the inbox (issue 13).
--
-- health.ForTenant counted the tenant's deliveries of the window in private.stripe_events on
-- every GET /v1/account of an owner: a range whose length is the tenant's traffic of the last
-- day (2,654 rows for the growth harness's 1M-row tenant), the one read whose cost still grew
-- (1.60x from 1k to 1M rows). Now a row trigger on the inbox keeps, per tenant and 5-minute
-- bucket of received_at, how many deliveries were received and how they ended; the read sums
-- at most 289 rows for a 24-hour window (2,017 for the 7-day MaxWindow), whatever the traffic.
--
-- The counts are those health.Read recounts from the inbox (for a tenant: events whose
-- tenant_id is it): received, processed, ignored, unmatched, refused, and unapplied (processed
-- with applied_at null). An event without a tenant counts nowhere here, as in the recount.
--
-- Both orders of the webhook's writes are right: today it inserts the event with outcome
-- 'processed' and no tenant (no count: the trigger's WHEN skips it) and sets the outcome and
-- tenant in an update before its commit (one upsert); written in the insert, the final outcome
-- is one upsert as well. Reconcile's ApplyStored (unmatched -> processed with a tenant,
-- processed without applied_at -> applied) moves the counts between columns in one statement.
-- A tenant deleted sets the inbox's tenant_id to null (the foreign key): the counts leave,
-- and the tenant's counter rows go with the cascade.
--
-- Cost on the webhook's hot path: one single-row upsert per delivery, in the statement that
-- sets the outcome (sent with the commit, so no round trip is added and the counter row is
-- held only for the commit). Not sharded like job_summary: a tenant's deliveries already
-- serialize on its billing row, which the webhook locks before it sets the outcome.
--
-- Bounded: the first delivery of a new bucket deletes the tenant's buckets older than 8 days
-- (health.MaxWindow is 7), and counts for events received before then are not kept at all.

-- No delivery may land between the backfill and the trigger's creation.
lock table private.stripe_events in share row exclusive mode;

create table private.webhook_delivery_counts (
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    bucket timestamptz not null,
    received integer not null default 0,
    processed integer not null default 0,
    ignored integer not null default 0,
    unmatched integer not null default 0,
    refused integer not null default 0,
    unapplied integer not null default 0,
    primary key (tenant_id, bucket)
);
alter table private.webhook_delivery_counts enable row level security;
revoke all on private.webhook_delivery_counts from public, anon, authenticated;

comment on table private.webhook_delivery_counts is
    'Stripe deliveries per tenant and 5-minute bucket of received_at, by outcome; kept by trigger webhook_delivery_counts_* on private.stripe_events, 8 days deep (issue 13).';

create function private.webhook_delivery_counts_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    horizon constant timestamptz := now() - interval '8 days';
    origin constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
    -- An update that keeps the event's tenant and bucket: one upsert of the difference.
    same boolean := tg_op = 'UPDATE' and coalesce(old.tenant_id = new.tenant_id
        and date_bin('5 minutes', old.received_at, origin) = date_bin('5 minutes', new.received_at, origin), false);
    created boolean;
begin
    if tg_op <> 'INSERT' and not same and old.tenant_id is not null and old.received_at >= horizon then
        -- Update only: the tenant's cascade may have deleted the row already.
        update private.webhook_delivery_counts d set
            received = d.received - 1,
            processed = d.processed - (old.outcome = 'processed')::int,
            ignored = d.ignored - (old.outcome = 'ignored')::int,
            unmatched = d.unmatched - (old.outcome = 'unmatched')::int,
            refused = d.refused - (old.outcome = 'refused')::int,
            unapplied = d.unapplied - (old.outcome = 'processed' and old.applied_at is null)::int
        where d.tenant_id = old.tenant_id and d.bucket = date_bin('5 minutes', old.received_at, origin);
    end if;
    if tg_op <> 'DELETE' and new.tenant_id is not null and new.received_at >= horizon then
        insert into private.webhook_delivery_counts as d
            (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
        values (new.tenant_id, date_bin('5 minutes', new.received_at, origin),
                1 - same::int,
                (new.outcome = 'processed')::int - (same and old.outcome = 'processed')::int,
                (new.outcome = 'ignored')::int - (same and old.outcome = 'ignored')::int,
                (new.outcome = 'unmatched')::int - (same and old.outcome = 'unmatched')::int,
                (new.outcome = 'refused')::int - (same and old.outcome = 'refused')::int,
                (new.outcome = 'processed' and new.applied_at is null)::int
                    - (same and old.outcome = 'processed' and old.applied_at is null)::int)
        on conflict (tenant_id, bucket) do update set
            received = d.received + excluded.received,
            processed = d.processed + excluded.processed,
            ignored = d.ignored + excluded.ignored,
            unmatched = d.unmatched + excluded.unmatched,
            refused = d.refused + excluded.refused,
            unapplied = d.unapplied + excluded.unapplied
        returning (xmax = 0) into created;
        if created then
            delete from private.webhook_delivery_counts
            where tenant_id = new.tenant_id and bucket < horizon;
        end if;
    end if;
    return null;
end;
$$;

-- The WHEN clauses keep the webhook's first insert (no tenant yet) and every update that
-- changes no count (crm_sync, a payload rewrite) out of PL/pgSQL.
create trigger webhook_delivery_counts_insert after insert on private.stripe_events
    for each row when (new.tenant_id is not null)
    execute function private.webhook_delivery_counts_track();
create trigger webhook_delivery_counts_update after update of outcome, tenant_id, applied_at, received_at on private.stripe_events
    for each row when ((old.tenant_id is not null or new.tenant_id is not null) and (
        old.tenant_id is distinct from new.tenant_id
        or old.outcome is distinct from new.outcome
        or (old.applied_at is null) <> (new.applied_at is null)
        or old.received_at is distinct from new.received_at))
    execute function private.webhook_delivery_counts_track();
create trigger webhook_delivery_counts_delete after delete on private.stripe_events
    for each row when (old.tenant_id is not null)
    execute function private.webhook_delivery_counts_track();

-- The counters of one tenant (p_tenant null: of all) recounted from the inbox, the last 8
-- days: the backfill below and ops' rebuild (private.rebuild_delivery_summary). The caller
-- keeps deliveries out meanwhile (a share row exclusive lock on the inbox).
create function private.recount_webhook_delivery_counts(p_tenant uuid) returns void
    language sql set search_path = ''
as $$
    delete from private.webhook_delivery_counts where p_tenant is null or tenant_id = p_tenant;
    insert into private.webhook_delivery_counts (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
    select tenant_id, date_bin('5 minutes', received_at, timestamptz '2000-01-01 00:00:00+00'), count(*),
           count(*) filter (where outcome = 'processed'), count(*) filter (where outcome = 'ignored'),
           count(*) filter (where outcome = 'unmatched'), count(*) filter (where outcome = 'refused'),
           count(*) filter (where outcome = 'processed' and applied_at is null)
    from private.stripe_events
    where tenant_id is not null and (p_tenant is null or tenant_id = p_tenant)
      and received_at >= now() - interval '8 days'
    group by 1, 2;
$$;
revoke all on function private.recount_webhook_delivery_counts(uuid) from public;

-- Fill from the inbox once.
select private.recount_webhook_delivery_counts(null);

-- Ops' recount (health.Rebuild, reconcile rebuild-health) now covers the delivery counters too.
-- The inbox is locked first: the webhook writes it before River's jobs, so taking the locks
-- in that order cannot deadlock with a delivery.
create or replace function private.rebuild_delivery_summary(p_tenant uuid) returns void
    language plpgsql set search_path = ''
as $$
declare
    uuid_text constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
begin
    lock table private.stripe_events in share row exclusive mode;
    lock table private.river_job, private.sync_status in share row exclusive mode;

    perform private.recount_webhook_delivery_counts(p_tenant);

    delete from private.sync_summary where p_tenant is null or tenant_id = p_tenant;
    insert into private.sync_summary (tenant_id, integration, pending, retrying, failed, synced, last_success_at, last_attempt_at)
    select tenant_id, integration,
           count(*) filter (where state = 'pending'), count(*) filter (where state = 'retrying'),
           count(*) filter (where state = 'failed'), count(*) filter (where state = 'synced'),
           max(last_success_at), max(last_attempt_at)
    from private.sync_status
    where p_tenant is null or tenant_id = p_tenant
    group by tenant_id, integration;

    delete from private.job_summary where p_tenant is null or tenant_id = p_tenant;
    delete from private.job_attempts where p_tenant is null or tenant_id = p_tenant;
    create temporary table pg_temp.rebuild_jobs on commit drop as
    select (j.args->>'tenant_id')::uuid as tenant_id, case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end as integration,
           j.state, j.metadata ? 'resolved_at' as resolved, j.errors, j.finalized_at
    from private.river_job j
    where j.kind in ('crm_sync', 'helpdesk_ticket')
      and (p_tenant is null or j.args->>'tenant_id' = p_tenant::text)
      and j.args->>'tenant_id' ~ uuid_text;

    insert into private.job_summary (tenant_id, integration, waiting, dead)
    select tenant_id, integration,
           count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
           count(*) filter (where state in ('discarded', 'cancelled') and not resolved)
    from pg_temp.rebuild_jobs
    group by 1, 2;

    insert into private.job_attempts (tenant_id, integration, bucket, succeeded, failed)
    select tenant_id, integration, date_bin('5 minutes', at, timestamptz '2000-01-01 00:00:00+00'), sum(ok), sum(bad)
    from (
        select j.tenant_id, j.integration, (e->>'at')::timestamptz as at, 0 as ok, 1 as bad
        from pg_temp.rebuild_jobs j, unnest(j.errors) e
        union all
        select j.tenant_id, j.integration, j.finalized_at, 1, 0
        from pg_temp.rebuild_jobs j where j.state = 'completed'
    ) attempts
    where at >= now() - interval '8 days'
    group by 1, 2, 3;
    drop table pg_temp.rebuild_jobs;
end;
$$;
revoke all on function private.rebuild_delivery_summary(uuid) from public;
