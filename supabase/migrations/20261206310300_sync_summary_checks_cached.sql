-- private.sync_summary's CHECK on integration becomes the check of a domain (issue 12), as
-- sync_status's did in 20261204100300_sync_status_checks_cached.sql and for the same reason:
-- a table's CHECK constraints are read back from their node strings and planned for every
-- statement that writes a row, a domain's once per backend. Every change of a sync status
-- upserts a summary row (private.sync_summary_track): about 27k backend instructions per queued
-- CRM push whose status changes (callgrind on a throwaway PostgreSQL 15,
-- BenchmarkEnqueueCRMSyncInPipe/synced), and per attempt a worker records.
--
-- Same rule, same constraint name, same SQLSTATE 23514 on a violation; the column changes type
-- without a rewrite (a domain without constraints is binary-compatible with text), then the
-- constraint is added to the domain, which checks the existing rows. Clients see text.
--
-- public.portal_sync_summary reads the column, and Postgres refuses to change the type of a
-- column a view uses: the view is dropped and created again as 20261130001302 left it, with
-- the same grants, in this transaction. Its integration column stays text (the cast in its
-- CTE), so the portal and PostgREST see the view they saw. Nothing else depends on the view
-- (private.portal_syncs_of, which returned its row type, went in 20261203002000; the portal's
-- PL/pgSQL read names it in its text, and plans it again).
drop view public.portal_sync_summary;

create domain private.sync_summary_integration as text;

alter table private.sync_summary alter column integration type private.sync_summary_integration;

alter domain private.sync_summary_integration
    add constraint sync_summary_integration_check check (value in ('crm', 'helpdesk'));

alter table private.sync_summary drop constraint sync_summary_integration_check;

-- As in 20261130001302_delivery_summary_shards.sql, but for the cast.
create view public.portal_sync_summary with (security_invoker = true) as
with s as (
    select tenant_id, integration::text as integration, sum(pending) as pending, sum(retrying) as retrying,
           sum(failed) as failed, sum(synced) as synced,
           max(last_success_at) as last_success_at, max(last_attempt_at) as last_attempt_at
    from private.sync_summary
    group by tenant_id, integration
)
select
    s.tenant_id,
    s.integration,
    case when s.failed > 0 then 'failed' when s.retrying > 0 then 'retrying'
         when s.pending > 0 then 'pending' else 'synced' end as state,
    case s.integration
        when 'crm' then case
            when s.failed > 0 then 'CRM update failed; our team has been alerted'
            when s.retrying > 0 then 'CRM update failed, we are retrying'
            when s.pending > 0 then case
                when b.last_payment_at is not null
                     and b.last_payment_at >= coalesce(s.last_success_at, '-infinity'::timestamptz)
                then 'payment received, syncing to CRM'
                else 'syncing to CRM' end
            else 'CRM up to date' end
        else case
            when s.failed > 0 then 'a support ticket could not be delivered; our team has been alerted'
            when s.retrying > 0 then 'support ticket delivery failed, we are retrying'
            when s.pending > 0 then 'support ticket pending'
            else 'support tickets delivered' end
    end as message,
    (s.pending + s.retrying)::bigint as waiting,
    s.failed::bigint as failed,
    s.last_success_at,
    s.last_attempt_at
from s
left join private.billing_accounts b on b.tenant_id = s.tenant_id
where s.pending + s.retrying + s.failed + s.synced > 0;

revoke all on table public.portal_sync_summary from public, anon, authenticated;
grant select on table public.portal_sync_summary to authenticated;
