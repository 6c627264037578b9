-- A live delivery that writes a subscription register the account shows (every
-- customer.subscription.* event of a tenant's current subscription, the harness's commonest
-- delivery) saves the register, the account and its record in ONE function call, as an invoice
-- event does since private.record_stripe_event_with_facets (issue 12). cmd/benchreport/
-- pgcost-side.sh with MIX=customer.subscription.updated=1 (the backends' instructions per
-- delivery of the harness's own stream of that type, prepared statements): 1,054,174 before,
-- 865,967 after (-17.9 %) with the warm-up and both counted runs inside one 5-minute bucket of
-- the delivery counts (1,038,182 and 902,624 in a first pair of runs that did not check it).
-- checkout.session.completed (637,169) already took the invoice path: it writes no register
-- and leaves the subscription facet as it is.
--
-- Such a delivery made three PL/pgSQL calls in its commit's statement:
-- private.save_billing_subscription (an INSERT .. ON CONFLICT DO UPDATE of the register: a
-- speculative insertion into the primary key, the conflict, then the update),
-- private.save_billing_account (all 31 columns of the account, each nullif() with its equality
-- look-up) and private.record_stripe_event (the inbox's insert and an upsert of the tenant's
-- counter row in private.webhook_delivery_counts). Each call sets and restores its
-- search_path.
--
-- private.record_stripe_event_with_subscription does the same in one call:
--   * the register is UPDATEd, and INSERTed only when there was none: the caller holds the
--     tenant's account lock, which covers its registers (only a holder of it writes them), so
--     nothing can insert it in between;
--   * the account's columns that such an event can change: the customer facet, the
--     subscription facet and status (taken from the register's arguments: shared/billing calls
--     it only when the account shows that register, showsSubscription), the row's source and
--     crm_version. The email, payment and failure facets are not touched: shared/billing calls
--     it only when the change leaves them as the locked row has them (keepsInvoiceFacets,
--     whose test fails when the projection gains a field it does not compare); otherwise the
--     three calls as before;
--   * the inbox's record, and the delivery counted on the account row (delivery_bucket,
--     bucket_deliveries, the finished bucket into webhook_delivery_counts), exactly as
--     private.record_stripe_event_with_facets does (20261206100000).
-- Absent values come as NULL, not '' (no nullif); an absent status is the account's 'none', as
-- private.save_billing_account writes it. The older functions stay for every other caller
-- (stored events, the refresh worker, a change the narrow save does not cover) and for code
-- deployed before this.

create function private.record_stripe_event_with_subscription(
    p_id text, p_type text, p_api_version text, p_created timestamptz, p_livemode boolean,
    p_customer text, p_raw bytea, p_outcome text, p_tenant uuid, p_crm_sync boolean,
    p_account_customer text, p_customer_created timestamptz, p_customer_event text,
    p_subscription text, p_price text, p_plan text, p_period_end timestamptz, p_cancel boolean,
    p_plan_created timestamptz, p_plan_event text,
    p_status text, p_status_created timestamptz, p_status_event text,
    p_source_created timestamptz, p_source_event text, p_crm_changed boolean)
returns void
language plpgsql set search_path = ''
as $$
declare
    this_bucket constant timestamptz := date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00:00+00');
    rolled timestamptz;
    n integer;
    created boolean;
begin
    if p_outcome is distinct from 'processed' then
        raise exception 'stripe event outcome % is not processed: only a processed event saves a subscription', p_outcome
            using errcode = 'check_violation';
    end if;
    if p_status not in ('none', 'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled',
            'unpaid', 'paused') then
        raise exception 'billing account status % is not a Stripe subscription status', p_status
            using errcode = 'check_violation';
    end if;
    update private.billing_subscriptions s set
        price_id = p_price, plan = p_plan, current_period_end = p_period_end, cancel_at_period_end = p_cancel,
        plan_event_created = p_plan_created, plan_event_id = p_plan_event,
        status = p_status, status_event_created = p_status_created, status_event_id = p_status_event
    where s.tenant_id = p_tenant and s.subscription_id = p_subscription;
    if not found then
        insert into private.billing_subscriptions (tenant_id, subscription_id, price_id, plan, current_period_end,
            cancel_at_period_end, plan_event_created, plan_event_id, status, status_event_created, status_event_id)
        values (p_tenant, p_subscription, p_price, p_plan, p_period_end, p_cancel, p_plan_created, p_plan_event,
            p_status, p_status_created, p_status_event);
    end if;
    update private.billing_accounts a set
        customer_id = p_account_customer, customer_event_created = p_customer_created,
        customer_event_id = p_customer_event,
        subscription_id = p_subscription, price_id = p_price, plan = p_plan,
        current_period_end = p_period_end, cancel_at_period_end = p_cancel,
        subscription_event_created = p_plan_created, subscription_event_id = p_plan_event,
        status = coalesce(p_status, 'none'), status_event_created = p_status_created, status_event_id = p_status_event,
        source_event_created = p_source_created, source_event_id = p_source_event,
        crm_version = a.crm_version + case when p_crm_changed then 1 else 0 end,
        updated_at = now(),
        delivery_bucket = this_bucket,
        bucket_deliveries = case when a.delivery_bucket = this_bucket then a.bucket_deliveries + 1 else 1 end,
        rolled_bucket = a.delivery_bucket,
        rolled_deliveries = a.bucket_deliveries
    where a.tenant_id = p_tenant
    returning a.rolled_bucket, a.rolled_deliveries into rolled, n;
    -- n: how many deliveries of the bucket rolled the account finished (0: its bucket goes on).
    if not found then
        -- No account row (not a path shared/billing takes): the table counts the delivery.
        rolled := this_bucket;
        n := 1;
    elsif rolled = this_bucket then
        n := 0;
    end if;
    insert into private.stripe_events (id, type, api_version, created, livemode, customer_id, raw_payload,
        outcome, tenant_id, applied_at, crm_sync, counted)
    values (p_id, p_type, p_api_version, p_created, p_livemode, p_customer, p_raw,
        'processed', p_tenant, now(), p_crm_sync, true);
    -- After the inbox, as the counters' writes always were (ops' recount locks the inbox first).
    if n <> 0 then
        if rolled >= now() - interval '8 days' then
            insert into private.webhook_delivery_counts as d (tenant_id, bucket, received, processed)
            values (p_tenant, rolled, n, n)
            on conflict (tenant_id, bucket) do update set received = d.received + excluded.received,
                processed = d.processed + excluded.processed
            returning (xmax = 0) into created;
            if created then
                delete from private.webhook_delivery_counts
                where tenant_id = p_tenant and bucket < now() - interval '8 days';
            end if;
        end if;
    end if;
end;
$$;
revoke all on function private.record_stripe_event_with_subscription(text, text, text, timestamptz, boolean, text,
    bytea, text, uuid, boolean, text, timestamptz, text, text, text, text, timestamptz, boolean, timestamptz, text,
    text, timestamptz, text, timestamptz, text, boolean) from public;
