-- The payment webhook's statements as PL/pgSQL functions (issue 12).
--
-- Measured with pg_stat_statements (track = all, track_planning = on) on a throwaway cluster at
-- 200 deliveries/s: about a quarter of Postgres's statement time per delivery went to parsing
-- and planning. The pool sends every statement unnamed (pgx's QueryExecModeCacheDescribe), so
-- Postgres parses and plans it on every execution, because Supavisor's transaction mode does
-- not keep server-side prepared statements. A PL/pgSQL function keeps the plans of its
-- statements for the life of its backend, whichever client the pooler hands the backend to,
-- and the call itself is trivial to plan. The Go code keeps every rule (what a change does to
-- the projection, when a job is queued, which tenant an event belongs to); these functions only
-- read and write what they are told, exactly as the SQL they replace did.
--
-- A delivery is now two round trips and four statements: begin + webhook_claim; then one
-- select of the writes (db.Pipe.DeferCall merges them) + commit. The event is recorded once,
-- with its final outcome, by the last write (record_stripe_event): its primary key is the claim
-- (a concurrent delivery of the same id fails there and rolls back), so there is no
-- insert-then-update of private.stripe_events any more.
--
-- Also measured: River's insert (JobInsertFastMany, a CTE over thirteen unnested arrays) cost
-- more to plan than to run. river_insert_unique writes the row River's insert writes for a job
-- without a schedule (unique key and states computed in Go as River computes them;
-- shared/jobs' TestJobsWrittenInAPipeAreRiversOwn proves River sees it as its own).

-- The first round trip of a delivery: was the event already recorded, and, when the
-- customer is mapped and its tenant has a projection, that projection locked (in
-- billing.accountColumns' order) with the tenant's failure-ticket rule and its subscriptions'
-- registers (one array per column of billing.subscriptionsQuery, read after the lock, so as
-- the previous holder of the lock left them). An event already
-- recorded locks nothing. When the lock had to wait for another delivery of the tenant, the
-- event is looked up again: that delivery may have been this event's (a concurrent
-- redelivery), and then this one is a duplicate. The primary key still decides at commit.
create function private.webhook_claim(p_event text, p_customer text)
returns table (
    seen boolean, ticket_on_payment_failure boolean, contact_email text,
    tenant_id uuid,
    customer_id text, customer_event_created timestamptz, customer_event_id text,
    customer_email text, email_event_created timestamptz, email_event_id text,
    subscription_id text, price_id text, plan text, current_period_end timestamptz, cancel_at_period_end boolean,
    subscription_event_created timestamptz, subscription_event_id text,
    status text, status_event_created timestamptz, status_event_id text,
    last_payment_at timestamptz, last_payment_amount bigint, last_payment_currency text, last_invoice_id text,
    payment_event_created timestamptz, payment_event_id text,
    last_failure_at timestamptz, last_failure_reason text, last_failure_invoice_id text,
    failure_event_created timestamptz, failure_event_id text, crm_version bigint,
    sub_ids text[], sub_price_ids text[], sub_plans text[], sub_period_ends timestamptz[], sub_cancels boolean[],
    sub_plan_created timestamptz[], sub_plan_events text[], sub_statuses text[], sub_status_created timestamptz[],
    sub_status_events text[])
language plpgsql set search_path = ''
as $$
declare
    t uuid;
begin
    seen := exists (select 1 from private.stripe_events e where e.id = p_event);
    if seen or p_customer is null then
        return next;
        return;
    end if;
    select c.tenant_id into t from private.stripe_customers c where c.customer_id = p_customer;
    if t is null then
        return next;
        return;
    end if;
    select a.tenant_id,
        a.customer_id, a.customer_event_created, a.customer_event_id,
        a.customer_email, a.email_event_created, a.email_event_id,
        a.subscription_id, a.price_id, a.plan, a.current_period_end, a.cancel_at_period_end,
        a.subscription_event_created, a.subscription_event_id,
        a.status, a.status_event_created, a.status_event_id,
        a.last_payment_at, a.last_payment_amount, a.last_payment_currency, a.last_invoice_id,
        a.payment_event_created, a.payment_event_id,
        a.last_failure_at, a.last_failure_reason, a.last_failure_invoice_id,
        a.failure_event_created, a.failure_event_id, a.crm_version
    into tenant_id,
        customer_id, customer_event_created, customer_event_id,
        customer_email, email_event_created, email_event_id,
        subscription_id, price_id, plan, current_period_end, cancel_at_period_end,
        subscription_event_created, subscription_event_id,
        status, status_event_created, status_event_id,
        last_payment_at, last_payment_amount, last_payment_currency, last_invoice_id,
        payment_event_created, payment_event_id,
        last_failure_at, last_failure_reason, last_failure_invoice_id,
        failure_event_created, failure_event_id, crm_version
    from private.billing_accounts a where a.tenant_id = t
    for update;
    if tenant_id is null then
        return next;
        return;
    end if;
    seen := exists (select 1 from private.stripe_events e where e.id = p_event);
    if seen then
        return next;
        return;
    end if;
    select tn.ticket_on_payment_failure, tn.contact_email into ticket_on_payment_failure, contact_email
    from public.tenants tn where tn.id = t;
    select array_agg(s.subscription_id), array_agg(s.price_id), array_agg(s.plan), array_agg(s.current_period_end),
        array_agg(s.cancel_at_period_end), array_agg(s.plan_event_created), array_agg(s.plan_event_id),
        array_agg(s.status), array_agg(s.status_event_created), array_agg(s.status_event_id)
    into sub_ids, sub_price_ids, sub_plans, sub_period_ends, sub_cancels, sub_plan_created, sub_plan_events,
        sub_statuses, sub_status_created, sub_status_events
    from private.billing_subscriptions s where s.tenant_id = t;
    return next;
end;
$$;

-- billing.saveAccount's subscription register.
create function private.save_billing_subscription(
    p_tenant uuid, p_subscription text, p_price text, p_plan text, p_period_end timestamptz,
    p_cancel boolean, p_plan_created timestamptz, p_plan_event text, p_status text,
    p_status_created timestamptz, p_status_event text)
returns void
language plpgsql set search_path = ''
as $$
begin
    insert into private.billing_subscriptions as s (tenant_id, subscription_id, price_id, plan, current_period_end,
        cancel_at_period_end, plan_event_created, plan_event_id, status, status_event_created, status_event_id)
    values (p_tenant, p_subscription, nullif(p_price, ''), nullif(p_plan, ''), p_period_end, p_cancel,
        p_plan_created, nullif(p_plan_event, ''), nullif(p_status, ''), p_status_created, nullif(p_status_event, ''))
    on conflict (tenant_id, subscription_id) do update set
        price_id = excluded.price_id, plan = excluded.plan, current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end, plan_event_created = excluded.plan_event_created,
        plan_event_id = excluded.plan_event_id, status = excluded.status,
        status_event_created = excluded.status_event_created, status_event_id = excluded.status_event_id;
end;
$$;

-- billing.saveAccount's projection row: every facet with its stamp, the newest stamp as the
-- row's source, crm_version raised by one when p_crm_changed.
create function private.save_billing_account(
    p_tenant uuid,
    p_customer text, p_customer_created timestamptz, p_customer_event text,
    p_email text, p_email_created timestamptz, p_email_event text,
    p_subscription text, p_price text, p_plan text, p_period_end timestamptz, p_cancel boolean,
    p_subscription_created timestamptz, p_subscription_event text,
    p_status text, p_status_created timestamptz, p_status_event text,
    p_paid_at timestamptz, p_amount bigint, p_currency text,
    p_invoice text, p_payment_created timestamptz, p_payment_event text,
    p_failed_at timestamptz, p_failure_reason text, p_failure_invoice text,
    p_failure_created timestamptz, p_failure_event text,
    p_source_created timestamptz, p_source_event text, p_crm_changed boolean)
returns void
language plpgsql set search_path = ''
as $$
begin
    update private.billing_accounts a set
        customer_id = nullif(p_customer, ''), customer_event_created = p_customer_created,
        customer_event_id = nullif(p_customer_event, ''),
        customer_email = nullif(p_email, ''), email_event_created = p_email_created, email_event_id = nullif(p_email_event, ''),
        subscription_id = nullif(p_subscription, ''), price_id = nullif(p_price, ''), plan = nullif(p_plan, ''),
        current_period_end = p_period_end, cancel_at_period_end = p_cancel,
        subscription_event_created = p_subscription_created, subscription_event_id = nullif(p_subscription_event, ''),
        status = p_status, status_event_created = p_status_created, status_event_id = nullif(p_status_event, ''),
        last_payment_at = p_paid_at, last_payment_amount = p_amount, last_payment_currency = nullif(p_currency, ''),
        last_invoice_id = nullif(p_invoice, ''), payment_event_created = p_payment_created,
        payment_event_id = nullif(p_payment_event, ''),
        last_failure_at = p_failed_at, last_failure_reason = nullif(p_failure_reason, ''),
        last_failure_invoice_id = nullif(p_failure_invoice, ''),
        failure_event_created = p_failure_created, failure_event_id = nullif(p_failure_event, ''),
        source_event_created = p_source_created, source_event_id = nullif(p_source_event, ''),
        crm_version = a.crm_version + case when p_crm_changed then 1 else 0 end,
        updated_at = now()
    where a.tenant_id = p_tenant;
end;
$$;

-- A live delivery's record in the inbox, written once with its final outcome (the statement
-- goes with the commit). It is also the claim: a second delivery of the same id fails here on
-- the primary key (waiting for the first to commit or roll back), and its whole transaction
-- rolls back, so an event is applied exactly once.
create function private.record_stripe_event(
    p_id text, p_type text, p_api_version text, p_created timestamptz, p_livemode boolean,
    p_payload text, p_raw bytea, p_outcome text, p_tenant uuid, p_crm_sync boolean)
returns void
language plpgsql set search_path = ''
as $$
begin
    insert into private.stripe_events (id, type, api_version, created, livemode, payload, raw_payload, outcome,
        tenant_id, applied_at, crm_sync)
    values (p_id, p_type, nullif(p_api_version, ''), p_created, p_livemode, p_payload::jsonb, p_raw, p_outcome,
        p_tenant, case when p_outcome = 'processed' then now() end, p_crm_sync);
end;
$$;

-- A River job without a schedule, as River's own insert writes it (state available, created
-- and scheduled now, metadata {}, no tags), unique by p_unique_key in the states of
-- p_unique_states (River's partial unique index decides, as it does for River's insert).
-- When the job is new and p_integration is given, the subject's sync status becomes pending
-- (shared/jobs.markPending). True when the job is new.
create function private.river_insert_unique(
    p_kind text, p_args jsonb, p_queue text, p_priority smallint, p_max_attempts smallint,
    p_unique_key bytea, p_unique_states integer,
    p_integration text, p_subject text, p_tenant uuid)
returns boolean
language plpgsql set search_path = ''
as $$
declare
    inserted bigint;
begin
    insert into private.river_job (args, kind, max_attempts, metadata, priority, queue, state, tags,
        unique_key, unique_states)
    values (p_args, p_kind, p_max_attempts, '{}', p_priority, p_queue, 'available', '{}',
        p_unique_key, p_unique_states::bit(8))
    on conflict (unique_key)
        where unique_key is not null and unique_states is not null
            and private.river_job_state_in_bitmask(unique_states, state)
        do nothing
    returning id into inserted;
    if inserted is null then
        return false;
    end if;
    if p_integration is not null then
        insert into private.sync_status (integration, subject, tenant_id, state, attempts)
        values (p_integration, p_subject, p_tenant, 'pending', 0)
        on conflict (integration, subject) do update
        set state = 'pending', attempts = 0, updated_at = now();
    end if;
    return true;
end;
$$;

revoke all on function private.webhook_claim(text, text),
    private.save_billing_subscription(uuid, text, text, text, timestamptz, boolean, timestamptz, text, text, timestamptz, text),
    private.save_billing_account(uuid, text, timestamptz, text, text, timestamptz, text, text, text, text, timestamptz, boolean,
        timestamptz, text, text, timestamptz, text, timestamptz, bigint, text, text, timestamptz, text, timestamptz, text, text,
        timestamptz, text, timestamptz, text, boolean),
    private.record_stripe_event(text, text, text, timestamptz, boolean, text, bytea, text, uuid, boolean),
    private.river_insert_unique(text, jsonb, text, smallint, smallint, bytea, integer, text, text, uuid)
from public;

-- Each delivery stores its event twice, as jsonb and as the verified bytes (3.5 KB each in the
-- load driver's events): compressing both with pglz cost more than the rest of the insert.
-- LZ4 compresses several times faster (Supabase's Postgres is built with it); it applies to
-- rows written from now on, and older rows stay readable as they are.
alter table private.stripe_events alter column payload set compression lz4,
    alter column raw_payload set compression lz4;

-- The projection rows and sync statuses are updated in place on every delivery of their
-- tenant; room on the page lets Postgres keep the new version there without touching the
-- indexes (a HOT update), since no indexed column changes.
alter table private.billing_accounts set (fillfactor = 80);
alter table private.billing_subscriptions set (fillfactor = 80);
alter table private.sync_status set (fillfactor = 80);

-- Each delivery's row fits a page once compressed (both copies of a 3.5 KB event take about
-- 3.5 KB): keep it there instead of moving the larger copy to the TOAST table, which cost a
-- second heap insert and an index insert per delivery.
alter table private.stripe_events set (toast_tuple_target = 8160);
