-- Spread each tenant's kept delivery summary over up to 16 rows per integration (issue 13).
--
-- With one row per tenant and integration, every transaction that enqueued a push or changed a
-- sync status of the tenant locked that row until it committed: one busy tenant's ticket
-- creations ran one after the other (measured with make load on make dev: 50 tickets/s and a
-- p50 of 7 s at 100/s offered, against 90/s on main). Now a write adds its change to the row
-- of its own shard, picked by the database connection (pg_backend_pid() % 16), so concurrent
-- transactions of one tenant rarely meet on a row, and a transaction always uses one shard of
-- a (tenant, integration): it never holds two rows of it, so sharding adds no deadlock. A row
-- may hold negative counts (a job inserted through one connection and finished through
-- another); readers sum the shards, at most 16 rows per integration.
alter table private.sync_summary add column shard smallint not null default 0;
alter table private.sync_summary drop constraint sync_summary_pkey;
alter table private.sync_summary add primary key (tenant_id, integration, shard);
alter table private.job_summary add column shard smallint not null default 0;
alter table private.job_summary drop constraint job_summary_pkey;
alter table private.job_summary add primary key (tenant_id, integration, shard);

create or replace function private.sync_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    same_key boolean := tg_op = 'UPDATE' and old.tenant_id = new.tenant_id and old.integration = new.integration;
begin
    if tg_op = 'DELETE' or (tg_op = 'UPDATE' and not same_key) then
        -- The old state leaves any row of the old key (update only: a row deleted by the
        -- tenant's cascade must not come back).
        update private.sync_summary s set
            pending = s.pending - (old.state = 'pending')::int,
            retrying = s.retrying - (old.state = 'retrying')::int,
            failed = s.failed - (old.state = 'failed')::int,
            synced = s.synced - (old.state = 'synced')::int
        where s.ctid = (select ctid from private.sync_summary
                        where tenant_id = old.tenant_id and integration = old.integration limit 1);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into private.sync_summary as s
            (tenant_id, integration, shard, pending, retrying, failed, synced, last_success_at, last_attempt_at)
        values (new.tenant_id, new.integration, pg_backend_pid() % 16,
                (new.state = 'pending')::int - (same_key and old.state = 'pending')::int,
                (new.state = 'retrying')::int - (same_key and old.state = 'retrying')::int,
                (new.state = 'failed')::int - (same_key and old.state = 'failed')::int,
                (new.state = 'synced')::int - (same_key and old.state = 'synced')::int,
                new.last_success_at, new.last_attempt_at)
        on conflict (tenant_id, integration, shard) do update set
            pending = s.pending + excluded.pending,
            retrying = s.retrying + excluded.retrying,
            failed = s.failed + excluded.failed,
            synced = s.synced + excluded.synced,
            last_success_at = greatest(s.last_success_at, excluded.last_success_at),
            last_attempt_at = greatest(s.last_attempt_at, excluded.last_attempt_at);
    end if;
    return null;
end;
$$;

create or replace function private.job_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    j private.river_job;
    tenant uuid;
    integ text;
    d_waiting integer := 0;
    d_dead integer := 0;
    old_errors integer := 0;
    e jsonb;
begin
    if tg_op = 'DELETE' then j := old; else j := new; end if;
    if coalesce(j.args->>'tenant_id', '') !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
        return null;
    end if;
    tenant := (j.args->>'tenant_id')::uuid;
    integ := case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end;
    if tg_op <> 'INSERT' then
        d_waiting := d_waiting - (old.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead - (old.state in ('discarded', 'cancelled') and not old.metadata ? 'resolved_at')::int;
        old_errors := coalesce(cardinality(old.errors), 0);
    end if;
    if tg_op <> 'DELETE' then
        d_waiting := d_waiting + (new.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead + (new.state in ('discarded', 'cancelled') and not new.metadata ? 'resolved_at')::int;
    end if;
    if d_waiting <> 0 or d_dead <> 0 then
        -- No foreign key here, so a delete may add its (negative) change to its shard too.
        insert into private.job_summary as s (tenant_id, integration, shard, waiting, dead)
        values (tenant, integ, pg_backend_pid() % 16, d_waiting, d_dead)
        on conflict (tenant_id, integration, shard) do update set
            waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead;
    end if;
    if tg_op <> 'DELETE' then
        if coalesce(cardinality(new.errors), 0) > old_errors then
            foreach e in array new.errors[old_errors + 1:] loop
                perform private.job_attempts_add(tenant, integ, (e->>'at')::timestamptz, 0, 1);
            end loop;
        end if;
        if new.state = 'completed' and (tg_op = 'INSERT' or old.state <> 'completed') then
            perform private.job_attempts_add(tenant, integ, new.finalized_at, 1, 0);
        end if;
    end if;
    return null;
end;
$$;

-- The account's sync summary sums the tenant's shards: at most 16 rows per integration.
create or replace view public.portal_sync_summary with (security_invoker = true) as
with s as (
    select tenant_id, integration, sum(pending) as pending, sum(retrying) as retrying,
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
