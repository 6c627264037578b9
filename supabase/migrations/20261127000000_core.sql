-- Core data model of portal-functions: tenants and their members (public, read by the portal
-- through RLS), and what only the functions touch (schema private, not exposed by the Data API):
-- the Stripe inbox, the billing projection, idempotency records and per-subject sync status.
-- Applied by `supabase db push` on a real project and by shared/db's runner in tests and dev.

create schema if not exists private;
revoke all on schema private from public;
-- The portal role may read the two private tables the account view shows (under RLS below);
-- everything else in private has no grant at all.
grant usage on schema private to authenticated, service_role;

-- Tenants: one per customer account of the portal business.
create table public.tenants (
    id uuid primary key default gen_random_uuid(),
    name text not null default '' check (char_length(name) <= 200),
    -- Open a support ticket when a payment fails (default off: many founders do not want one).
    ticket_on_payment_failure boolean not null default false,
    -- Who the CRM should show as the account's contact when Stripe has no email for it yet.
    contact_email text check (contact_email is null or contact_email ~ '^[^@\s]+@[^@\s]+$'),
    -- The account owner in the CRM (a HubSpot owner's email), optional.
    crm_owner_email text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index tenants_created_at_idx on public.tenants (created_at);

-- Memberships: which Supabase Auth user may act for which tenant, and as what.
create table public.memberships (
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    user_id uuid not null,
    role text not null default 'member' check (role in ('owner', 'admin', 'member')),
    -- A disabled membership keeps its history but grants nothing.
    disabled_at timestamptz,
    created_at timestamptz not null default now(),
    primary key (tenant_id, user_id)
);
create index memberships_user_id_idx on public.memberships (user_id) where disabled_at is null;
create index memberships_tenant_created_idx on public.memberships (tenant_id, created_at);

-- The tenants the calling user is an active member of. SECURITY DEFINER in a schema the Data API
-- does not expose, as Supabase's RLS guide advises, so policies can use it without recursion and
-- Postgres evaluates it once per statement (wrapped in a select).
create function private.current_tenant_ids() returns setof uuid
    language sql stable security definer set search_path = ''
as $$
    select m.tenant_id from public.memberships m
    where m.user_id = (select auth.uid()) and m.disabled_at is null
$$;
revoke all on function private.current_tenant_ids() from public;
grant execute on function private.current_tenant_ids() to authenticated;

alter table public.tenants enable row level security;
alter table public.memberships enable row level security;
revoke all on table public.tenants, public.memberships from anon, authenticated;
grant select on table public.tenants, public.memberships to authenticated;

create policy tenants_select_member on public.tenants for select to authenticated
    using (id in (select private.current_tenant_ids()));
create policy memberships_select_own on public.memberships for select to authenticated
    using (user_id = (select auth.uid()));

-- Tickets: support requests, tied to tenant and user ids, never matched by free-text email.
create table public.tickets (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    user_id uuid,
    requester_email text,
    requester_name text,
    subject text not null check (char_length(subject) between 1 and 200),
    body text not null check (char_length(body) between 1 and 20000),
    category text not null check (category in ('billing', 'technical', 'account', 'other')),
    priority text not null check (priority in ('low', 'normal', 'high', 'urgent')),
    status text not null default 'pending_sync' check (status in ('pending_sync', 'synced', 'failed')),
    helpdesk_ticket_id bigint,
    source text not null default 'portal' check (source in ('portal', 'payment_failure')),
    -- What caused a system ticket (the invoice id of a failed payment); unique per tenant.
    source_ref text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint tickets_source_ref_key unique (tenant_id, source, source_ref)
);
create index tickets_tenant_created_idx on public.tickets (tenant_id, created_at desc, id desc);
create index tickets_pending_idx on public.tickets (created_at) where helpdesk_ticket_id is null;

create table public.ticket_attachments (
    id uuid primary key default gen_random_uuid(),
    ticket_id uuid not null references public.tickets (id) on delete cascade,
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    name text not null check (char_length(name) between 1 and 255),
    size_bytes bigint not null check (size_bytes between 1 and 10485760),
    content_type text not null,
    -- Object path in Supabase Storage: <tenant_id>/<ticket_id>/<attachment id>-<name>.
    object_path text not null unique,
    created_at timestamptz not null default now()
);
create index ticket_attachments_tenant_created_idx on public.ticket_attachments (tenant_id, created_at);
create index ticket_attachments_ticket_idx on public.ticket_attachments (ticket_id);

alter table public.tickets enable row level security;
alter table public.ticket_attachments enable row level security;
revoke all on table public.tickets, public.ticket_attachments from anon, authenticated;
grant select on table public.tickets, public.ticket_attachments to authenticated;
create policy tickets_select_member on public.tickets for select to authenticated
    using (tenant_id in (select private.current_tenant_ids()));
create policy ticket_attachments_select_member on public.ticket_attachments for select to authenticated
    using (tenant_id in (select private.current_tenant_ids()));

-- The webhook inbox: every verified Stripe event once (its id is the dedupe key).
create table private.stripe_events (
    id text primary key,
    type text not null,
    api_version text,
    created timestamptz not null,
    livemode boolean not null default false,
    payload jsonb not null,
    tenant_id uuid references public.tenants (id) on delete set null,
    outcome text not null check (outcome in ('processed', 'ignored', 'unmatched')),
    received_at timestamptz not null default now(),
    applied_at timestamptz
);
create index stripe_events_tenant_created_idx on private.stripe_events (tenant_id, created);
create index stripe_events_received_idx on private.stripe_events (received_at);
create index stripe_events_unmatched_idx on private.stripe_events (created) where outcome = 'unmatched';

-- Which Stripe customer belongs to which tenant (written by checkout-create and by
-- checkout.session.completed's client_reference_id).
create table private.stripe_customers (
    customer_id text primary key,
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    created_at timestamptz not null default now()
);
create index stripe_customers_tenant_idx on private.stripe_customers (tenant_id, created_at);

-- The billing projection, derived from verified Stripe events only. Each facet keeps the stamp
-- (event created, event id) of the event that last wrote it, so an older event never
-- overwrites newer state whatever order Stripe delivers them in.
create table private.billing_accounts (
    tenant_id uuid primary key references public.tenants (id) on delete cascade,
    customer_id text,
    customer_email text,
    subscription_id text,
    price_id text,
    plan text,
    status text not null default 'none' check (status in (
        'none', 'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due',
        'canceled', 'unpaid', 'paused')),
    current_period_end timestamptz,
    cancel_at_period_end boolean not null default false,
    last_payment_at timestamptz,
    last_payment_amount bigint,
    last_payment_currency text,
    last_invoice_id text,
    last_failure_at timestamptz,
    last_failure_reason text,
    source_event_created timestamptz,
    source_event_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index billing_accounts_created_idx on private.billing_accounts (created_at);

-- Idempotency records (Powertools for AWS Lambda semantics), keyed by (scope, key).
create table private.idempotency_keys (
    scope text not null,
    key text not null check (char_length(key) between 1 and 255),
    request_hash bytea not null,
    status text not null check (status in ('in_progress', 'completed')),
    response_status integer,
    response_headers jsonb,
    response_body bytea,
    locked_until timestamptz,
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    primary key (scope, key)
);
create index idempotency_keys_expires_idx on private.idempotency_keys (expires_at);

-- Sync state of every push, per integration and subject: what the portal and ops see.
create table private.sync_status (
    integration text not null check (integration in ('crm', 'helpdesk')),
    subject text not null,
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    state text not null default 'pending' check (state in ('pending', 'synced', 'retrying', 'failed')),
    last_success_at timestamptz,
    last_attempt_at timestamptz,
    last_error text,
    attempts integer not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (integration, subject)
);
create index sync_status_tenant_created_idx on private.sync_status (tenant_id, created_at);

alter table private.stripe_events enable row level security;
alter table private.stripe_customers enable row level security;
alter table private.billing_accounts enable row level security;
alter table private.idempotency_keys enable row level security;
alter table private.sync_status enable row level security;
revoke all on all tables in schema private from anon, authenticated;
grant select on table private.billing_accounts, private.sync_status to authenticated;
create policy billing_accounts_select_member on private.billing_accounts for select to authenticated
    using (tenant_id in (select private.current_tenant_ids()));
create policy sync_status_select_member on private.sync_status for select to authenticated
    using (tenant_id in (select private.current_tenant_ids()));
