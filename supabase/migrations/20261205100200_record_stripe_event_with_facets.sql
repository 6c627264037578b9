-- A live delivery that saves the invoice facets records its event in the same function call
-- (issue 12). make bench-pg (the backends' instructions per delivery of
-- BenchmarkWebhookDelivery): 990,653 before, 953,341 after (-3.8 %); with prepared statements
-- 768,975 before, 748,830 after (-2.6 %).
--
-- Every call of a function declared with set search_path = '' sets the GUC on entry and
-- restores it on exit, and the namespace search path is computed again after each (about 10k
-- instructions a call, besides PL/pgSQL's own set-up of the call). The path is kept: Supabase's
-- linter (0011_function_search_path_mutable) asks for it on every function, and it keeps the
-- bodies' unqualified operators and functions from resolving through a caller's search_path.
-- Instead a delivery makes one call fewer: private.record_stripe_event_with_facets is
-- private.save_billing_invoice_facets followed by private.record_stripe_event, their two
-- bodies in one (the facets' tenant is the event's), and shared/billing calls it when the
-- delivery's save is that one (live deliveries: the save waits for the record, and goes with
-- it to the database in the same deferred statement as before). The two functions stay for
-- every other caller. It is called for an event with a tenant only (a null one fails on the
-- counters' not-null tenant_id, and nothing is written).

create function private.record_stripe_event_with_facets(
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
    if p_outcome not in ('processed', 'ignored', 'unmatched', 'refused') then
        raise exception 'stripe event outcome % is not one the inbox records', p_outcome
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
    values (p_id, p_type, nullif(p_api_version, ''), p_created, p_livemode, nullif(p_customer, ''), p_raw,
        p_outcome, p_tenant, case when p_outcome = 'processed' then now() end, p_crm_sync, true);
    insert into private.webhook_delivery_counts as d
        (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
    values (p_tenant, date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00:00+00'), 1,
        (p_outcome = 'processed')::int, (p_outcome = 'ignored')::int, (p_outcome = 'unmatched')::int,
        (p_outcome = 'refused')::int, 0)
    on conflict (tenant_id, bucket) do update set
        received = d.received + excluded.received,
        processed = d.processed + excluded.processed,
        ignored = d.ignored + excluded.ignored,
        unmatched = d.unmatched + excluded.unmatched,
        refused = d.refused + excluded.refused
    returning (xmax = 0) into created;
    if created then
        delete from private.webhook_delivery_counts
        where tenant_id = p_tenant and bucket < now() - interval '8 days';
    end if;
end;
$$;
revoke all on function private.record_stripe_event_with_facets(text, text, text, timestamptz, boolean, text, bytea,
    text, uuid, boolean, text, timestamptz, text, text, timestamptz, text, timestamptz, bigint, text, text,
    timestamptz, text, timestamptz, text, text, timestamptz, text, timestamptz, text, boolean) from public;
