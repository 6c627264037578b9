-- CRM versions: which state of a tenant HubSpot has been sent.
--
-- billing_accounts.crm_version goes up by one in the statement that saves a change the CRM shows
-- (billing's CRMView), and the crm_sync job queued in the same transaction carries it. The
-- pusher records in crm_pushes the newest version it has sent to HubSpot (monotonic: a late,
-- older send never lowers it), so a job completes only once HubSpot holds its version or a newer
-- one, and reconcile finds a tenant whose CRM is behind by comparing the two numbers rather than
-- job times (a completed job says nothing about which state it sent).
alter table private.billing_accounts add column crm_version bigint not null default 0;

comment on column private.billing_accounts.crm_version is
    'Goes up with every change of what the CRM shows; crm_sync jobs carry the version they were queued for.';

create table private.crm_pushes (
    tenant_id uuid primary key references public.tenants (id) on delete cascade,
    sent_version bigint not null,
    sent_at timestamptz not null default now()
);

comment on table private.crm_pushes is
    'The newest billing_accounts.crm_version sent to HubSpot per tenant (written after a successful send, never lowered).';

alter table private.crm_pushes enable row level security;
revoke all on private.crm_pushes from anon, authenticated;
