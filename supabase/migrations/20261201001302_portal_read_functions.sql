-- The portal's reads as PL/pgSQL functions, so Postgres plans each read once per connection
-- instead of on every request (issue 13).
--
-- pgx sends every statement unnamed (no server-side prepared statements: the functions run
-- behind Supavisor's transaction mode), so each read was parsed, planned (views with RLS
-- subplans) and run anew: measured with pgbench over the owner's account and ticket reads as
-- the user, a read transaction took 1.84-1.93 ms unnamed and 0.75-0.83 ms prepared, so more
-- than half of the database's time per read was planning. A PL/pgSQL function keeps the plans
-- of its queries for the connection's life (custom plans for the first five calls, then the
-- generic plan when it is no worse), which a pooler cannot take away: the function is a
-- schema object, not a statement name.
--
-- Each function runs exactly the query shared/portal (and shared/health) explains, so the
-- plans in BENCHMARKS.md and the bounded-plan test are these functions' plans; a test checks
-- that each function's text holds that query. The portal's functions are security invoker:
-- they run as the calling user, so RLS applies exactly as to the views. The owner's health runs
-- on the service role (River's job table is not the portal role's) and is executable by no one
-- else.

create function private.portal_account_of(uuid) returns setof public.portal_account
    language plpgsql stable set search_path = ''
as $$
begin
    return query select * from public.portal_account where tenant_id = $1;
end;
$$;

create function private.portal_syncs_of(uuid) returns setof public.portal_sync_summary
    language plpgsql stable set search_path = ''
as $$
begin
    return query select * from public.portal_sync_summary where tenant_id = $1;
end;
$$;

-- $1 tenant, $2 how many rows: the first page, newest first.
create function private.portal_tickets_first(uuid, integer) returns setof public.portal_tickets
    language plpgsql stable set search_path = ''
as $$
begin
    return query select * from public.portal_tickets where tenant_id = $1 order by created_at desc, id desc limit $2;
end;
$$;

-- $1 tenant, ($2, $3) the cursor (created_at, id), $4 how many rows: the page after the cursor.
create function private.portal_tickets_after(uuid, timestamptz, uuid, integer) returns setof public.portal_tickets
    language plpgsql stable set search_path = ''
as $$
begin
    return query select * from public.portal_tickets where tenant_id = $1 and (created_at, id) < ($2, $3) order by created_at desc, id desc limit $4;
end;
$$;

-- $1 the ticket, $2 the tenant.
create function private.portal_ticket_of(uuid, uuid) returns setof public.portal_tickets
    language plpgsql stable set search_path = ''
as $$
begin
    return query select * from public.portal_tickets where id = $1 and tenant_id = $2;
end;
$$;

revoke all on function private.portal_account_of(uuid), private.portal_syncs_of(uuid),
    private.portal_tickets_first(uuid, integer), private.portal_tickets_after(uuid, timestamptz, uuid, integer),
    private.portal_ticket_of(uuid, uuid) from public;
grant execute on function private.portal_account_of(uuid), private.portal_syncs_of(uuid),
    private.portal_tickets_first(uuid, integer), private.portal_tickets_after(uuid, timestamptz, uuid, integer),
    private.portal_ticket_of(uuid, uuid) to authenticated;

-- shared/health.ForTenant's statement: $1 tenant, $2 window in seconds, $3 the tenant as
-- River's args spell it. A row per integration.
create function private.tenant_health(uuid, double precision, text)
    returns table (until timestamptz, received integer, processed integer, ignored integer, unmatched integer,
                   refused integer, unapplied integer, integration text, waiting integer, dead integer,
                   succeeded integer, failed integer, failing_subjects integer, last_success_at timestamptz,
                   oldest_waiting_at timestamptz)
    language plpgsql stable set search_path = ''
as $$
#variable_conflict use_column
begin
    return query
    with ev as (
        select coalesce(sum(d.received), 0)::int as received,
               coalesce(sum(d.processed), 0)::int as processed,
               coalesce(sum(d.ignored), 0)::int as ignored,
               coalesce(sum(d.unmatched), 0)::int as unmatched,
               coalesce(sum(d.refused), 0)::int as refused,
               coalesce(sum(d.unapplied), 0)::int as unapplied
        from private.webhook_delivery_counts d
        where d.tenant_id = $1
          and d.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
          and d.bucket <= now())
    select now(), ev.received, ev.processed, ev.ignored, ev.unmatched, ev.refused, ev.unapplied,
           i.integration, coalesce(j.waiting, 0), coalesce(j.dead, 0),
           coalesce(a.succeeded, 0), coalesce(a.failed, 0), coalesce(s.failed, 0), s.last_success_at,
           case when j.waiting > 0 then (
               select r.created_at from private.river_job r
               where r.kind = i.kind and r.args->>'tenant_id' = $3
                 and r.state in ('available', 'pending', 'retryable', 'running', 'scheduled')
               order by r.created_at limit 1) end
    from ev
    cross join (values ('crm', 'crm_sync'), ('helpdesk', 'helpdesk_ticket')) as i (integration, kind)
    left join lateral (
        select sum(js.waiting)::int as waiting, sum(js.dead)::int as dead
        from private.job_summary js where js.tenant_id = $1 and js.integration = i.integration
    ) j on true
    left join lateral (
        select sum(ss.failed)::int as failed, max(ss.last_success_at) as last_success_at
        from private.sync_summary ss where ss.tenant_id = $1 and ss.integration = i.integration
    ) s on true
    left join lateral (
        select sum(b.succeeded)::int as succeeded, sum(b.failed)::int as failed
        from private.job_attempts b
        where b.tenant_id = $1 and b.integration = i.integration
          and b.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
          and b.bucket <= now()
    ) a on true
    order by i.integration;
end;
$$;
revoke all on function private.tenant_health(uuid, double precision, text) from public;
