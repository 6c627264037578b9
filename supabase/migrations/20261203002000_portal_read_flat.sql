-- Each portal read's function does its reads itself, writes the ticket JSON as text, and sizes
-- the RLS helper's answer (issue 13: mixed reads at 1,000/s on 2 cores).
--
-- Measured with callgrind on a backend (instructions per call, repeatable on this noisy box),
-- pgbench -M extended sending each route's statement as pgx does, on make dev's database after
-- 3,000 tickets (a full first page): account 2.74 M, ticket list 2.71 M, ticket 0.94 M
-- instructions a read. Where they went:
--   * the ticket list's JSON: json_build_object and to_json look up every argument's type in
--     the system caches on every call (PostgreSQL 15 keeps nothing per call site), 20 keys a
--     ticket, 21 tickets, then json_agg and an array of rows: about a third of the read;
--   * a layer of functions per read: each route function called portal_enter and then a
--     wrapper function (portal_account_of, portal_syncs_of, portal_tickets_first/after,
--     portal_ticket_of) whose one query is the read, each a statement with its own executor
--     start, a function scan, a tuplestore and a GUC nest level for its SET clauses;
--   * private.current_tenant_ids() is estimated at 1,000 rows (a set-returning function's
--     default), so every RLS policy's hashed subplan built a 1,024-bucket hash table per
--     query and table: about 50,000 instructions each, 2 to 4 per read.
--
-- So:
--   1. The route functions run their reads directly on the views (same queries, same generic
--      plans, still as the user under RLS) and take portal_enter's answer as an expression,
--      not as a query; the wrapper functions are dropped.
--   2. A ticket's JSON is written as text: the fixed words (category, priority, status, its
--      message, source; CHECK constraints and the view's CASE allow nothing else) as they are,
--      the subject and the body through to_json (escaped), times through json_ts, the
--      attachments as the view's jsonb. The list is one cursor loop that joins the tickets'
--      text. The answer is the same JSON (the contract test compares it with Go's).
--   3. current_tenant_ids() is estimated at 2 rows (a user's memberships in the scope).
-- Measured the same way: ticket list 2.71 M -> 1.71 M, ticket 0.94 M -> 0.82 M, account
-- 2.74 M -> 2.52 M instructions a read.

alter function private.current_tenant_ids() rows 2;

-- A time as a JSON string, quoted, as Go's encoding/json writes a UTC time.Time; null for null.
create function private.json_ts(t timestamptz) returns text
    language sql stable parallel safe
as $$
    select coalesce(left(to_json(t at time zone 'UTC')::text, -1) || 'Z"', 'null')
$$;

-- A ticket as the API writes it in a list (shared/portal.TicketSummary), compact.
create function private.portal_ticket_text(id uuid, subject text, category text, priority text, status text,
    status_message text, source text, created_at timestamptz, updated_at timestamptz, attachments jsonb) returns text
    language sql stable parallel safe
as $$
    select '{"id":"' || id::text || '","subject":' || to_json(subject)::text
        || ',"category":"' || category || '","priority":"' || priority || '","status":"' || status
        || '","status_message":"' || status_message || '","source":"' || source
        || '","created_at":' || private.json_ts(created_at) || ',"updated_at":' || private.json_ts(updated_at)
        || ',"attachments":' || attachments::text || '}'
$$;

create or replace function private.portal_read_account(p_user uuid, p_tenant uuid, p_claims text, p_window double precision,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    sc record;
    acc json;
begin
    sc := private.portal_enter(p_user, p_tenant, p_claims, p_window);
    refusal := sc.refusal; tenant_id := sc.tenant_id; role := sc.role;
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
                   left join public.portal_sync_summary y on y.tenant_id = sc.tenant_id and y.integration = i.integration))
    into acc
    from public.portal_account a where a.tenant_id = sc.tenant_id;
    if acc is null then
        -- RLS hid the tenant's row: the scope said member, the policies did not agree.
        raise exception 'read account: no row for the scope''s tenant';
    end if;
    body := acc::text;
    if sc.health is not null then
        body := left(body, -1) || ', "health" : ' || sc.health::text || '}';
    end if;
end;
$$;

-- GET /v1/tickets: one page, newest first; ($4, $5) the cursor or nulls for the first page,
-- $6 the page size. One extra row says whether a next page exists; next_cursor is
-- shared/portal.Cursor.Encode of the page's last ticket.
create or replace function private.portal_read_tickets(p_user uuid, p_tenant uuid, p_claims text,
    p_after_at timestamptz, p_after_id uuid, p_limit integer,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    sc record;
    page refcursor;
    r record;
    n integer := 0;
    list text := '';
    last_at timestamptz;
    last_id uuid;
    next text;
begin
    sc := private.portal_enter(p_user, p_tenant, p_claims, null);
    refusal := sc.refusal; tenant_id := sc.tenant_id; role := sc.role;
    if refusal is not null then
        return;
    end if;
    -- Two statements, not one with both branches: each keeps its own generic plan.
    if p_after_at is null then
        open page for select t.id, t.created_at,
                private.portal_ticket_text(t.id, t.subject, t.category, t.priority, t.status, t.status_message,
                                           t.source, t.created_at, t.updated_at, t.attachments) as j
            from public.portal_tickets t where t.tenant_id = sc.tenant_id
            order by t.created_at desc, t.id desc limit p_limit + 1;
    else
        open page for select t.id, t.created_at,
                private.portal_ticket_text(t.id, t.subject, t.category, t.priority, t.status, t.status_message,
                                           t.source, t.created_at, t.updated_at, t.attachments) as j
            from public.portal_tickets t where t.tenant_id = sc.tenant_id
              and (t.created_at, t.id) < (p_after_at, p_after_id)
            order by t.created_at desc, t.id desc limit p_limit + 1;
    end if;
    loop
        fetch page into r;
        exit when not found;
        n := n + 1;
        if n > p_limit then
            next := rtrim(translate(encode(convert_to(
                        format('{"t":"%s","i":"%s"}', private.json_time(last_at), last_id), 'UTF8'),
                        'base64'), E'+/\n', '-_'), '=');
            exit;
        end if;
        list := case when n = 1 then r.j else list || ',' || r.j end;
        last_at := r.created_at;
        last_id := r.id;
    end loop;
    close page;
    body := '{"tickets":[' || list || '],"next_cursor":' || coalesce('"' || next || '"', 'null') || '}';
end;
$$;

-- GET /v1/tickets/{id}: refusal 'not_found' for an unknown id or one RLS hides (one answer).
create or replace function private.portal_read_ticket(p_user uuid, p_tenant uuid, p_claims text, p_id uuid,
    out refusal text, out tenant_id uuid, out role text, out body text)
    language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_variable
declare
    sc record;
begin
    sc := private.portal_enter(p_user, p_tenant, p_claims, null);
    refusal := sc.refusal; tenant_id := sc.tenant_id; role := sc.role;
    if refusal is not null then
        return;
    end if;
    select left(private.portal_ticket_text(t.id, t.subject, t.category, t.priority, t.status, t.status_message,
                                           t.source, t.created_at, t.updated_at, t.attachments), -1)
           || ',"body":' || to_json(t.body)::text || '}'
    into body
    from public.portal_tickets t where t.id = p_id and t.tenant_id = sc.tenant_id;
    if body is null then
        refusal := 'not_found';
    end if;
end;
$$;

drop function private.portal_account_of(uuid);
drop function private.portal_syncs_of(uuid);
drop function private.portal_tickets_first(uuid, integer);
drop function private.portal_tickets_after(uuid, timestamptz, uuid, integer);
drop function private.portal_ticket_of(uuid, uuid);
drop function private.portal_ticket_json(public.portal_tickets);

revoke all on function private.json_ts(timestamptz),
    private.portal_ticket_text(uuid, text, text, text, text, text, text, timestamptz, timestamptz, jsonb) from public;
-- Called after the switch to the user.
grant execute on function private.json_ts(timestamptz),
    private.portal_ticket_text(uuid, text, text, text, text, text, text, timestamptz, timestamptz, jsonb) to authenticated;
