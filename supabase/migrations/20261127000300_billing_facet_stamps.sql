-- Per-facet ordering stamps for the billing projection.
--
-- Stripe does not deliver events in order, and different events write different parts of the
-- projection: a subscription event knows the plan but nothing of the last payment, an invoice
-- event the reverse. With one stamp for the whole row, a newer subscription event that landed
-- first would make an older invoice.paid look stale and its payment would be lost. So every
-- facet (a set of columns that the same events always write together) keeps the stamp of the
-- event that last wrote it, and each facet is a last-writer-wins register ordered by
-- (event created, event id): the id breaks ties within Stripe's one-second resolution, so
-- every delivery order converges to the same row. source_event_created / source_event_id
-- (core) stay the newest stamp of any facet: "the event this row was last derived from".
alter table private.billing_accounts
    -- customer_id
    add column customer_event_created timestamptz,
    add column customer_event_id text,
    -- customer_email (only events that carry an email write it)
    add column email_event_created timestamptz,
    add column email_event_id text,
    -- subscription_id, price_id, plan, current_period_end, cancel_at_period_end
    add column subscription_event_created timestamptz,
    add column subscription_event_id text,
    -- status (subscription events, invoice.paid, invoice.payment_failed)
    add column status_event_created timestamptz,
    add column status_event_id text,
    -- last_payment_at, last_payment_amount, last_payment_currency, last_invoice_id
    add column payment_event_created timestamptz,
    add column payment_event_id text,
    -- last_failure_at, last_failure_reason, last_failure_invoice_id
    add column failure_event_created timestamptz,
    add column failure_event_id text,
    add column last_failure_invoice_id text;

comment on column private.billing_accounts.status_event_created is
    'created of the Stripe event that last wrote status; with status_event_id, orders writers';
