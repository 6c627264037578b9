-- private.webhook_claim in three statements instead of six (issue 12).
--
-- Every statement a PL/pgSQL function runs costs Postgres an executor start and end (a portal,
-- a snapshot, the relation and index locks, the expression state) whatever it reads, and the
-- claim ran six on every new event of a known customer: the event, the customer's mapping, the
-- projection's lock, the event again, the tenant's rule, its subscriptions. Now the mapping and
-- the lock are one join (only the projection row is locked: FOR UPDATE OF a), and the second
-- look at the event, the rule and the subscriptions are one statement. What it returns, what it
-- locks and in what order are unchanged: the subscriptions and the second look at the event are
-- still read after the lock, so as the previous holder of the lock left them.
create or replace function private.webhook_claim(p_event text, p_customer text)
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
begin
    seen := exists (select 1 from private.stripe_events e where e.id = p_event);
    if seen or p_customer is null then
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
    from private.stripe_customers c
    join private.billing_accounts a on a.tenant_id = c.tenant_id
    where c.customer_id = p_customer
    for update of a;
    if tenant_id is null then
        return next;
        return;
    end if;
    -- When the lock had to wait for another delivery of the tenant, that delivery may have been
    -- this event's (a concurrent redelivery): then this one is a duplicate. The primary key
    -- still decides at commit.
    select exists (select 1 from private.stripe_events e where e.id = p_event),
        tn.ticket_on_payment_failure, tn.contact_email,
        s.ids, s.price_ids, s.plans, s.period_ends, s.cancels, s.plan_created, s.plan_events,
        s.statuses, s.status_created, s.status_events
    into seen, ticket_on_payment_failure, contact_email,
        sub_ids, sub_price_ids, sub_plans, sub_period_ends, sub_cancels, sub_plan_created, sub_plan_events,
        sub_statuses, sub_status_created, sub_status_events
    from (select webhook_claim.tenant_id as id) k
        left join public.tenants tn on tn.id = k.id
        cross join lateral (
            select array_agg(bs.subscription_id) as ids, array_agg(bs.price_id) as price_ids,
                array_agg(bs.plan) as plans, array_agg(bs.current_period_end) as period_ends,
                array_agg(bs.cancel_at_period_end) as cancels, array_agg(bs.plan_event_created) as plan_created,
                array_agg(bs.plan_event_id) as plan_events, array_agg(bs.status) as statuses,
                array_agg(bs.status_event_created) as status_created, array_agg(bs.status_event_id) as status_events
            from private.billing_subscriptions bs where bs.tenant_id = k.id
        ) s;
    return next;
end;
$$;
