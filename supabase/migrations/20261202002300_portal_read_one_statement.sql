-- Each portal read in ONE statement and one round trip, answered as the JSON the handler
-- writes, and every read query on a kept generic plan (issue 13: mixed reads at 1,000/s).
--
-- Measured on make dev over a read sweep (pg_stat_statements with track = all and
-- track_planning, CPU seconds from /proc): a read cost Postgres about 1 ms of CPU and the Go
-- server about 0.9 ms, and the knee was CPU. A read was two round trips and six statements
-- (the membership lookup; then begin, the owner's health, role and claims, the read's
-- function calls, commit), each parsed, planned and answered on its own, and:
--   * the queries inside the read functions were planned on EVERY call, not once per
--     connection: PL/pgSQL's plan cache kept choosing custom plans (the generic plan's
--     estimate is no cheaper), so tenant_health's statement spent 0.28 ms a call planning
--     and ran 0.10 ms; the other reads 0.05 to 0.10 ms a call planning;
--   * the membership lookup was planned on every request too (0.08 ms).
--
-- So:
--   1. Every read function keeps its generic plan (plan_cache_mode = force_generic_plan on
--      the function): the plans are the same index scans bounded by the page or the window
--      (the plan test explains them generic, as the functions now run them).
--   2. One function per route (portal_read_account, portal_read_tickets, portal_read_ticket)
--      does what the handler and tenant.Middleware did between them: resolves the caller's
--      active membership (as the pool's role, exactly tenant.Resolve's rules), for an owner's
--      account reads the delivery health (as the pool's role: River's tables are not the
--      portal role's), then switches to the role authenticated with the verified claims, as
--      PostgREST does (set_config(..., true): it ends with the statement's transaction), and
--      reads through the read functions, under RLS. It answers the JSON body the handler
--      writes as is, or the refusal the handler turns into its problem+json answer.
--   The handler sends one statement in an implicit transaction: no begin, no commit, no
--   second round trip, and Go neither decodes rows nor encodes the answer.
--
-- The route functions are security invoker and executable only by the pool's role (the
-- owner); they trust the user id and claims they are given, which the Go server verified
-- (HS256/JWKS), exactly as tenant.AsUser did.

alter function private.portal_account_of(uuid) set plan_cache_mode = force_generic_plan;
alter function private.portal_syncs_of(uuid) set plan_cache_mode = force_generic_plan;
alter function private.portal_tickets_first(uuid, integer) set plan_cache_mode = force_generic_plan;
alter function private.portal_tickets_after(uuid, timestamptz, uuid, integer) set plan_cache_mode = force_generic_plan;
alter function private.portal_ticket_of(uuid, uuid) set plan_cache_mode = force_generic_plan;
alter function private.tenant_health(uuid, double precision, text) set plan_cache_mode = force_generic_plan;

-- A time as Go's encoding/json writes a UTC time.Time (RFC 3339, trailing zeros of the
-- fraction dropped, "Z"), so the answers keep the shape they had when Go encoded them.
create function private.json_time(t timestamptz) returns text
    language sql stable parallel safe
as $$
    select (to_json(t at time zone 'UTC') #>> '{}') || 'Z'
$$;

-- How every portal read starts, as the pool's role:
--   1. the caller's scope, by tenant.Resolve's rules: the active membership in the requested
--      tenant when p_tenant is not null, else in the user's only tenant. refusal is
--      'not_member' (no such membership: one answer for "no such tenant" and "not yours") or
--      'choose_tenant' (several tenants and none requested), and nothing more happens;
--   2. when p_window is not null and the caller owns the tenant, the tenant's delivery
--      health over that many seconds (shared/health.ForTenant's statement, as JSON in the
--      shape of shared/portal.Health), as the pool's role: River's job table and the kept
--      counters are not the portal role's; the tenant is the resolved scope's;
--   3. the switch to the user (tenant.AsUser's statement): role authenticated, the verified
--      claims in every setting Supabase's auth.* functions read (so a session-level leftover
--      on a pooled backend never decides who the user is), and app.tenant_id, which narrows
--      private.current_tenant_ids() to the scope's tenant; until the transaction ends.
create function private.portal_enter(p_user uuid, p_tenant uuid, p_claims text, p_window double precision,
    out refusal text, out tenant_id uuid, out role text, out health json)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    n integer;
    c jsonb := p_claims::jsonb;
begin
    if p_tenant is not null then
        select m.tenant_id, m.role into tenant_id, role from public.memberships m
        where m.tenant_id = p_tenant and m.user_id = p_user and m.disabled_at is null;
        n := case when found then 1 else 0 end;
    else
        select count(*), min(m.tenant_id::text)::uuid, min(m.role) into n, tenant_id, role
        from (select m.tenant_id, m.role from public.memberships m
              where m.user_id = p_user and m.disabled_at is null limit 2) m;
    end if;
    if n <> 1 then
        tenant_id := null; role := null;
        refusal := case when n = 0 then 'not_member' else 'choose_tenant' end;
        return;
    end if;
    if p_window is not null and role = 'owner' then
        select json_build_object(
                   'since', private.json_time(max(h.until) - make_interval(secs => p_window)),
                   'until', private.json_time(max(h.until)),
                   'window_seconds', p_window,
                   'webhook', json_build_object(
                       'received', max(h.received), 'processed', max(h.processed), 'ignored', max(h.ignored),
                       'unapplied', max(h.unapplied),
                       'success_rate', case when max(h.received) > 0
                                            then (max(h.processed) + max(h.ignored))::float8 / max(h.received)
                                            else 1 end),
                   'integrations', coalesce(json_agg(json_build_object(
                       'integration', h.integration,
                       'attempts', h.succeeded + h.failed,
                       'failures', h.failed,
                       'pending', h.waiting,
                       'oldest_pending_seconds', case when h.oldest_waiting_at < h.until
                           then extract(epoch from h.until - h.oldest_waiting_at)::float8 else 0 end,
                       'dead_letters', h.dead,
                       'failing_subjects', h.failing_subjects,
                       'last_success_at', private.json_time(h.last_success_at)) order by h.integration), '[]'))
        into health
        from private.tenant_health(tenant_id, p_window, tenant_id::text) h;
    end if;
    if (c ->> 'sub') is distinct from p_user::text then
        raise exception 'act as user: claims subject does not match the scope''s user';
    end if;
    perform set_config('role', 'authenticated', true),
            set_config('request.jwt.claims', p_claims, true),
            set_config('request.jwt.claim', p_claims, true),
            set_config('request.jwt.claim.sub', c ->> 'sub', true),
            set_config('request.jwt.claim.role', coalesce(c ->> 'role', ''), true),
            set_config('request.jwt.claim.email', coalesce(c ->> 'email', ''), true),
            set_config('app.tenant_id', tenant_id::text, true);
end;
$$;

-- A ticket as the API writes it in a list (shared/portal.TicketSummary).
create function private.portal_ticket_json(t public.portal_tickets) returns json
    language sql stable
as $$
    select json_build_object('id', t.id, 'subject', t.subject, 'category', t.category, 'priority', t.priority,
        'status', t.status, 'status_message', t.status_message, 'source', t.source,
        'created_at', private.json_time(t.created_at), 'updated_at', private.json_time(t.updated_at),
        'attachments', t.attachments)
$$;

-- GET /v1/account. $4 the health window in seconds (read for owners only, by portal_enter).
create function private.portal_read_account(p_user uuid, p_tenant uuid, p_claims text, p_window double precision,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    s record;
    acc json;
begin
    select * into s from private.portal_enter(p_user, p_tenant, p_claims, p_window);
    refusal := s.refusal; tenant_id := s.tenant_id; role := s.role;
    if refusal is not null then
        return;
    end if;
    select json_build_object(
               'tenant', json_build_object('id', a.tenant_id, 'name', a.name),
               'role', role,
               'billing', json_build_object(
                   'status', a.billing_status, 'message', a.billing_message, 'plan', a.plan,
                   'current_period_end', private.json_time(a.current_period_end),
                   'cancel_at_period_end', a.cancel_at_period_end,
                   'last_payment_at', private.json_time(a.last_payment_at),
                   'last_payment_amount', a.last_payment_amount,
                   'last_payment_currency', a.last_payment_currency,
                   'last_failure_at', private.json_time(a.last_failure_at),
                   'updated_at', private.json_time(a.billing_updated_at)),
               'syncs', (
                   select json_agg(json_build_object(
                              'integration', i.integration,
                              'state', coalesce(y.state, 'idle'),
                              'message', coalesce(y.message, i.idle),
                              'waiting', coalesce(y.waiting, 0),
                              'failed', coalesce(y.failed, 0),
                              'last_success_at', private.json_time(y.last_success_at),
                              'last_attempt_at', private.json_time(y.last_attempt_at)) order by i.n)
                   from (values (1, 'crm', 'nothing to sync to the CRM yet'),
                                (2, 'helpdesk', 'no support tickets yet')) as i (n, integration, idle)
                   left join private.portal_syncs_of(a.tenant_id) y on y.integration = i.integration))
    into acc
    from private.portal_account_of(tenant_id) a;
    if acc is null then
        -- RLS hid the tenant's row: the scope said member, the policies did not agree.
        raise exception 'read account: no row for the scope''s tenant';
    end if;
    body := acc::text;
    if s.health is not null then
        body := left(body, -1) || ', "health" : ' || s.health::text || '}';
    end if;
end;
$$;

-- GET /v1/tickets: one page, newest first; ($4, $5) the cursor or nulls for the first page,
-- $6 the page size. One extra row says whether a next page exists; next_cursor is
-- shared/portal.Cursor.Encode of the page's last ticket.
create function private.portal_read_tickets(p_user uuid, p_tenant uuid, p_claims text,
    p_after_at timestamptz, p_after_id uuid, p_limit integer,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    s record;
    page public.portal_tickets[];
    list json;
    next text;
begin
    select * into s from private.portal_enter(p_user, p_tenant, p_claims, null);
    refusal := s.refusal; tenant_id := s.tenant_id; role := s.role;
    if refusal is not null then
        return;
    end if;
    -- Two statements, not one with both branches: each keeps its own generic plan.
    if p_after_at is null then
        page := array(select t from private.portal_tickets_first(tenant_id, p_limit + 1) t);
    else
        page := array(select t from private.portal_tickets_after(tenant_id, p_after_at, p_after_id, p_limit + 1) t);
    end if;
    select coalesce(json_agg(private.portal_ticket_json(page[i]) order by i), '[]') into list
    from generate_series(1, least(cardinality(page), p_limit)) i;
    if cardinality(page) > p_limit then
        next := rtrim(translate(encode(convert_to(
                    format('{"t":"%s","i":"%s"}', private.json_time(page[p_limit].created_at), page[p_limit].id), 'UTF8'),
                    'base64'), E'+/\n', '-_'), '=');
    end if;
    body := json_build_object('tickets', list, 'next_cursor', next)::text;
end;
$$;

-- GET /v1/tickets/{id}: refusal 'not_found' for an unknown id or one RLS hides (one answer).
create function private.portal_read_ticket(p_user uuid, p_tenant uuid, p_claims text, p_id uuid,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    s record;
begin
    select * into s from private.portal_enter(p_user, p_tenant, p_claims, null);
    refusal := s.refusal; tenant_id := s.tenant_id; role := s.role;
    if refusal is not null then
        return;
    end if;
    select left(private.portal_ticket_json(t)::text, -1) || ', "body" : ' || to_json(t.body)::text || '}' into body
    from private.portal_ticket_of(p_id, tenant_id) t;
    if body is null then
        refusal := 'not_found';
    end if;
end;
$$;

revoke all on function private.json_time(timestamptz),
    private.portal_enter(uuid, uuid, text, double precision), private.portal_ticket_json(public.portal_tickets),
    private.portal_read_account(uuid, uuid, text, double precision),
    private.portal_read_tickets(uuid, uuid, text, timestamptz, uuid, integer),
    private.portal_read_ticket(uuid, uuid, text, uuid) from public;
-- Called after the switch to the user.
grant execute on function private.json_time(timestamptz), private.portal_ticket_json(public.portal_tickets)
    to authenticated;
