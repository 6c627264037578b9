-- What the portal reads (GET /v1/account, /v1/tickets[/{id}]) and what the helpdesk worker
-- records about a push. The portal reads views with security_invoker = true, so Postgres
-- applies the RLS policies of the underlying tables as the calling user: another tenant's rows
-- are simply not there. Only `authenticated` may select from them.

-- When the helpdesk worker first tried to create the Zendesk ticket: once set, every later
-- attempt looks the ticket up by external_id before creating, so an answer lost to a timeout
-- can never produce a second Zendesk ticket (even after Zendesk forgets the idempotency key).
alter table public.tickets add column helpdesk_attempted_at timestamptz;
-- When the ticket reached the helpdesk.
alter table public.tickets add column synced_at timestamptz;

create index sync_status_tenant_integration_idx on private.sync_status (tenant_id, integration);

-- One row per ticket, with its attachments and a status a portal can show as is.
create view public.portal_tickets with (security_invoker = true) as
select
    t.id,
    t.tenant_id,
    t.user_id,
    t.subject,
    t.body,
    t.category,
    t.priority,
    t.status,
    case t.status
        when 'pending_sync' then 'support ticket pending'
        when 'synced' then 'received by our support team'
        else 'could not be delivered to our support team; we have been alerted'
    end as status_message,
    t.source,
    t.created_at,
    t.updated_at,
    coalesce((
        select jsonb_agg(jsonb_build_object(
                   'id', a.id, 'name', a.name, 'size', a.size_bytes, 'content_type', a.content_type)
                   order by a.created_at, a.id)
        from public.ticket_attachments a
        where a.ticket_id = t.id
    ), '[]'::jsonb) as attachments
from public.tickets t;

-- One row per tenant: who it is and its billing state, in words.
create view public.portal_account with (security_invoker = true) as
select
    t.id as tenant_id,
    t.name,
    coalesce(b.status, 'none') as billing_status,
    case coalesce(b.status, 'none')
        when 'none' then 'no subscription yet'
        when 'incomplete' then 'payment pending'
        when 'incomplete_expired' then 'checkout expired; start again'
        when 'trialing' then 'trial active'
        when 'active' then case when b.cancel_at_period_end
                                then 'subscription active; ends at the end of the period'
                                else 'subscription active' end
        when 'past_due' then 'payment failed; please update your payment method'
        when 'canceled' then 'subscription canceled'
        when 'unpaid' then 'payment overdue'
        when 'paused' then 'subscription paused'
    end as billing_message,
    b.plan,
    b.current_period_end,
    coalesce(b.cancel_at_period_end, false) as cancel_at_period_end,
    b.last_payment_at,
    b.last_payment_amount,
    b.last_payment_currency,
    b.last_failure_at,
    b.updated_at as billing_updated_at
from public.tenants t
left join private.billing_accounts b on b.tenant_id = t.id;

-- One row per tenant and integration: the worst state among its subjects (failed, then
-- retrying, then pending, then synced), how many are waiting, the last success, and words.
create view public.portal_sync_summary with (security_invoker = true) as
with per as (
    select
        s.tenant_id,
        s.integration,
        max(case s.state when 'failed' then 4 when 'retrying' then 3 when 'pending' then 2 else 1 end) as rank,
        count(*) filter (where s.state in ('pending', 'retrying')) as waiting,
        count(*) filter (where s.state = 'failed') as failed,
        max(s.last_success_at) as last_success_at,
        max(s.last_attempt_at) as last_attempt_at
    from private.sync_status s
    group by s.tenant_id, s.integration
)
select
    per.tenant_id,
    per.integration,
    case per.rank when 4 then 'failed' when 3 then 'retrying' when 2 then 'pending' else 'synced' end as state,
    case per.integration
        when 'crm' then case per.rank
            when 4 then 'CRM update failed; our team has been alerted'
            when 3 then 'CRM update failed, we are retrying'
            when 2 then case
                when b.last_payment_at is not null
                     and b.last_payment_at >= coalesce(per.last_success_at, '-infinity'::timestamptz)
                then 'payment received, syncing to CRM'
                else 'syncing to CRM' end
            else 'CRM up to date' end
        else case per.rank
            when 4 then 'a support ticket could not be delivered; our team has been alerted'
            when 3 then 'support ticket delivery failed, we are retrying'
            when 2 then 'support ticket pending'
            else 'support tickets delivered' end
    end as message,
    per.waiting,
    per.failed,
    per.last_success_at,
    per.last_attempt_at
from per
left join private.billing_accounts b on b.tenant_id = per.tenant_id;

revoke all on table public.portal_tickets, public.portal_account, public.portal_sync_summary
    from public, anon, authenticated;
grant select on table public.portal_tickets, public.portal_account, public.portal_sync_summary
    to authenticated;
