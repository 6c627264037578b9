-- Bind a Stripe customer to a tenant only from what we created (issue 10).
--
-- checkout-create records every Checkout Session it creates, in the request that creates it.
-- The webhook binds a checkout.session.completed's customer to a tenant only when the session
-- is one of these (or carries metadata.tenant_id, which only our API key writes): Payment
-- Links and Pricing Tables let the payer set client_reference_id, so that field alone proves
-- nothing. The webhook reads this table with one primary-key lookup, and only for
-- checkout.session.completed events whose customer is not mapped yet.
create table private.checkout_sessions (
    session_id text primary key check (char_length(session_id) <= 255),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    created_at timestamptz not null default now()
);
create index checkout_sessions_tenant_idx on private.checkout_sessions (tenant_id, created_at);

alter table private.checkout_sessions enable row level security;
revoke all on table private.checkout_sessions from public, anon, authenticated;

comment on table private.checkout_sessions is
    'Checkout Sessions checkout-create created, by tenant: the only sessions whose completion binds a customer.';

-- 'refused': a verified event the webhook will not apply because it claims a tenant without
-- proof (a checkout session we did not create naming a tenant in client_reference_id). Kept
-- for audit and counted in delivery health; never applied, not even by reconcile.
alter table private.stripe_events drop constraint stripe_events_outcome_check;
alter table private.stripe_events add constraint stripe_events_outcome_check
    check (outcome in ('processed', 'ignored', 'unmatched', 'refused'));

-- The unmatched events of one customer, found when the customer is bound to a tenant so the
-- binding delivery applies them (billing.Processor.applyUnmatched). Partial: only unmatched
-- events are indexed, so the index stays as small as the backlog.
create index stripe_events_unmatched_customer_idx on private.stripe_events ((payload->'data'->'object'->>'customer'))
    where outcome = 'unmatched';
