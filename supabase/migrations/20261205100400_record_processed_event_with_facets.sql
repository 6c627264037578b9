-- private.record_stripe_event_with_facets records a processed event only, and says so
-- (issue 12). make bench-pg (the backends' instructions per delivery of
-- BenchmarkWebhookDelivery): 922,480 before, 903,239 after (-2.1 %); with prepared statements
-- 718,133 before, 697,367 after (-2.9 %).
--
-- shared/billing calls it for a live delivery that saved the projection's invoice facets,
-- which is a processed one and nothing else. Its statements now say 'processed' as constants
-- instead of computing each counter and applied_at from p_outcome (an expression each, built
-- again by every execution of the cached plan), and it refuses any other outcome with the
-- check_violation the inbox's writers use. It also takes NULL for an absent API version or
-- customer (shared/billing sends them so), instead of nullif() with its equality look-up.

create or replace function private.record_stripe_event_with_facets(
    p_id text, p_type text, p_api_version text, p_created timestamptz, p_livemode boolean,
    p_customer text, p_raw bytea, p_outcome text, p_tenant uuid, p_crm_sync boolean,
    p_account_customer text, p_customer_created timestamptz, p_customer_event text,
    p_email text, p_email_created timestamptz, p_email_event text,
    p_paid_at timestamptz, p_amount bigint, p_currency text,
    p_invoice text, p_payment_created timestamptz, p_payment_event text,
    p_failed_at timestamptz, p_failure_reason text, p_failure_invoice text,
    p_failure_created timestamptz, p_failure_event text,
    p_source_created timestamptz, p_source_event text, p_crm_changed boolean)
returns void
language plpgsql set search_path = ''
as $$
declare
    created boolean;
begin
    if p_outcome is distinct from 'processed' then
        raise exception 'stripe event outcome % is not processed: only a processed event saves facets', p_outcome
            using errcode = 'check_violation';
    end if;
    update private.billing_accounts a set
        customer_id = p_account_customer, customer_event_created = p_customer_created,
        customer_event_id = p_customer_event,
        customer_email = p_email, email_event_created = p_email_created, email_event_id = p_email_event,
        last_payment_at = p_paid_at, last_payment_amount = p_amount, last_payment_currency = p_currency,
        last_invoice_id = p_invoice, payment_event_created = p_payment_created, payment_event_id = p_payment_event,
        last_failure_at = p_failed_at, last_failure_reason = p_failure_reason,
        last_failure_invoice_id = p_failure_invoice,
        failure_event_created = p_failure_created, failure_event_id = p_failure_event,
        source_event_created = p_source_created, source_event_id = p_source_event,
        crm_version = a.crm_version + case when p_crm_changed then 1 else 0 end,
        updated_at = now()
    where a.tenant_id = p_tenant;
    insert into private.stripe_events (id, type, api_version, created, livemode, customer_id, raw_payload,
        outcome, tenant_id, applied_at, crm_sync, counted)
    values (p_id, p_type, p_api_version, p_created, p_livemode, p_customer, p_raw,
        'processed', p_tenant, now(), p_crm_sync, true);
    insert into private.webhook_delivery_counts as d
        (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
    values (p_tenant, date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00:00+00'), 1, 1, 0, 0, 0, 0)
    on conflict (tenant_id, bucket) do update set received = d.received + 1, processed = d.processed + 1
    returning (xmax = 0) into created;
    if created then
        delete from private.webhook_delivery_counts
        where tenant_id = p_tenant and bucket < now() - interval '8 days';
    end if;
end;
$$;
