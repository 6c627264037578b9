-- Recount the kept delivery summary (migration delivery_summary) from history, for one tenant
-- or (p_tenant null) for all: ops' repair after a manual edit of River's tables with triggers
-- off, and how a bulk load (the growth harness's COPY, triggers off) fills the summary in one
-- pass instead of one upsert per row. The definitions are the triggers' own: waiting and dead
-- jobs now, failed and successful attempts per 5-minute bucket over the last 8 days, subjects
-- by sync state. It locks River's jobs and the sync status against writes (not reads) until
-- the caller's transaction ends, so nothing changes between the delete and the recount; run it
-- for one tenant where possible: for all tenants it holds back every enqueue and every job
-- completion while it runs.
create function private.rebuild_delivery_summary(p_tenant uuid) returns void
    language plpgsql set search_path = ''
as $$
declare
    uuid_text constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
begin
    lock table private.river_job, private.sync_status in share row exclusive mode;

    delete from private.sync_summary where p_tenant is null or tenant_id = p_tenant;
    insert into private.sync_summary (tenant_id, integration, pending, retrying, failed, synced, last_success_at, last_attempt_at)
    select tenant_id, integration,
           count(*) filter (where state = 'pending'), count(*) filter (where state = 'retrying'),
           count(*) filter (where state = 'failed'), count(*) filter (where state = 'synced'),
           max(last_success_at), max(last_attempt_at)
    from private.sync_status
    where p_tenant is null or tenant_id = p_tenant
    group by tenant_id, integration;

    delete from private.job_summary where p_tenant is null or tenant_id = p_tenant;
    delete from private.job_attempts where p_tenant is null or tenant_id = p_tenant;
    create temporary table pg_temp.rebuild_jobs on commit drop as
    select (j.args->>'tenant_id')::uuid as tenant_id, case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end as integration,
           j.state, j.metadata ? 'resolved_at' as resolved, j.errors, j.finalized_at
    from private.river_job j
    where j.kind in ('crm_sync', 'helpdesk_ticket')
      and (p_tenant is null or j.args->>'tenant_id' = p_tenant::text)
      and j.args->>'tenant_id' ~ uuid_text;

    insert into private.job_summary (tenant_id, integration, waiting, dead)
    select tenant_id, integration,
           count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
           count(*) filter (where state in ('discarded', 'cancelled') and not resolved)
    from pg_temp.rebuild_jobs
    group by 1, 2;

    insert into private.job_attempts (tenant_id, integration, bucket, succeeded, failed)
    select tenant_id, integration, date_bin('5 minutes', at, timestamptz '2000-01-01 00:00:00+00'), sum(ok), sum(bad)
    from (
        select j.tenant_id, j.integration, (e->>'at')::timestamptz as at, 0 as ok, 1 as bad
        from pg_temp.rebuild_jobs j, unnest(j.errors) e
        union all
        select j.tenant_id, j.integration, j.finalized_at, 1, 0
        from pg_temp.rebuild_jobs j where j.state = 'completed'
    ) attempts
    where at >= now() - interval '8 days'
    group by 1, 2, 3;
    drop table pg_temp.rebuild_jobs;
end;
$$;
revoke all on function private.rebuild_delivery_summary(uuid) from public;
