-- A change that leaves the subscription facet and the status as they are (every invoice event,
-- the common delivery) saves the projection with an UPDATE of the facets it can have changed
-- only (issue 12). make bench-pg (the backends' instructions per delivery of
-- BenchmarkWebhookDelivery, an invoice.paid each): 1,078,039 before, 990,653 after (-8.1 %:
-- the statement that calls it is parsed, bound and planned with 21 parameters instead of 31);
-- with prepared statements 821,744 before, 768,975 after (-6.4 %).
--
-- private.save_billing_account sets all 31 columns: its plan is cached, but every execution
-- builds the projection of the new row again, an expression per column, and each nullif() also
-- looks up its equality function. Measured on its own (one call a transaction, prepared), the
-- 31-column update cost 206k instructions, 186k with the parameters written as they are, 160k
-- with the 21 columns below.
--
-- private.save_billing_invoice_facets sets the customer, email, payment and failure facets,
-- the row's source and crm_version: the columns of every facet an invoice, checkout or customer
-- event writes. The subscription facet (subscription_id .. subscription_event_id) and the
-- status (status .. status_event_id) are not touched: shared/billing calls it only when the
-- change leaves them equal to the locked row's (keepsSubscription, whose test fails when the
-- projection gains a field it does not compare), and private.save_billing_account otherwise.
-- It takes NULL for an absent value instead of '' (no nullif), so no status check either: it
-- writes no status.

create function private.save_billing_invoice_facets(
    p_tenant uuid,
    p_customer text, p_customer_created timestamptz, p_customer_event text,
    p_email text, p_email_created timestamptz, p_email_event text,
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
        customer_id = p_customer, customer_event_created = p_customer_created, customer_event_id = p_customer_event,
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
end;
$$;
revoke all on function private.save_billing_invoice_facets(uuid, text, timestamptz, text, text, timestamptz, text,
    timestamptz, bigint, text, text, timestamptz, text, timestamptz, text, text, timestamptz, text, timestamptz, text,
    boolean) from public;
