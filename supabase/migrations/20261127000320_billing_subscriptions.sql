-- Each of a tenant's Stripe subscriptions, so that the end of an old one cannot end the
-- tenant's current one.
--
-- A tenant can hold more than one subscription over time (a switch of plan through a second
-- checkout, a resubscription after a cancel). With one last-writer-wins register for the whole
-- account, a customer.subscription.deleted of the OLD subscription, newer than every event of
-- the new one, marked the tenant canceled while it was paying. So every subscription keeps its
-- own registers here (plan: written by its subscription events; status: by those and by its
-- invoices, where an ending status, canceled or incomplete_expired, is final as it is at
-- Stripe), and billing_accounts shows the current one: a live subscription before an ended one,
-- then the one with the newest event (last writer wins among live subscriptions). The result is
-- a function of the set of events alone, so every delivery order still converges.
create table private.billing_subscriptions (
    tenant_id uuid not null references private.billing_accounts (tenant_id) on delete cascade,
    subscription_id text not null,
    price_id text,
    plan text,
    current_period_end timestamptz,
    cancel_at_period_end boolean not null default false,
    plan_event_created timestamptz,
    plan_event_id text,
    status text,
    status_event_created timestamptz,
    status_event_id text,
    primary key (tenant_id, subscription_id)
);

-- The subscription each account shows today becomes its first register.
insert into private.billing_subscriptions (tenant_id, subscription_id, price_id, plan, current_period_end,
    cancel_at_period_end, plan_event_created, plan_event_id, status, status_event_created, status_event_id)
select tenant_id, subscription_id, price_id, plan, current_period_end, cancel_at_period_end,
    subscription_event_created, subscription_event_id, nullif(status, 'none'), status_event_created, status_event_id
from private.billing_accounts
where subscription_id is not null;

alter table private.billing_subscriptions enable row level security;
revoke all on table private.billing_subscriptions from public, anon, authenticated;
