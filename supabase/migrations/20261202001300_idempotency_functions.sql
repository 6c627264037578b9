-- The idempotency store's two statements as PL/pgSQL functions (issue 13: ticket creation).
--
-- pgx sends every statement unnamed (server-side prepared statements are out behind
-- Supavisor's transaction mode), so Postgres planned the claim (a CTE that reads, deletes and
-- upserts) and the completion on every request; a PL/pgSQL function keeps its statements'
-- plans per connection. The claim also folds the look-up into the upsert's statement: one
-- round trip instead of two, and a live record (a replay, a 409) is still only read. The
-- completion raises when the attempt no longer holds its claim, so it can go with the commit
-- (shared/idempotency defers it there) and still roll the transaction back on the server.
-- And the claim commits without waiting for its WAL flush (see below): at 300 tickets a second
-- on make dev, commits waiting on WAL writes were the largest share of a request's time.

-- Reads the live record of (p_scope, p_key) and, only when there is none, claims the key for
-- p_ttl_us microseconds with an expiry of p_expiry_us: a free key is inserted, a lapsed claim
-- or an expired response is taken over, and up to p_cleanup expired records of other keys are
-- deleted in passing. One row: the claim's lock deadline (the fencing token; null when not
-- claimed) and the live record (nulls when none). Neither means another attempt claimed the
-- key after this statement's snapshot: look again.
create function private.idempotency_claim(
    p_scope text, p_key text, p_hash bytea, p_ttl_us bigint, p_expiry_us bigint, p_cleanup integer,
    out locked_until timestamptz, out status text, out request_hash bytea, out response_status integer,
    out response_headers jsonb, out response_body bytea, out retry_after integer)
language plpgsql set search_path = ''
as $$
#variable_conflict use_column
begin
    select k.status, k.request_hash, k.response_status, k.response_headers, k.response_body,
           greatest(1, ceil(extract(epoch from (k.locked_until - now()))))::int
    into status, request_hash, response_status, response_headers, response_body, retry_after
    from private.idempotency_keys k
    where k.scope = p_scope and k.key = p_key
      and ((k.status = 'completed' and k.expires_at >= now())
        or (k.status = 'in_progress' and k.locked_until >= now()));
    if found then
        return;
    end if;
    -- The claim's commit need not wait for its WAL flush: whatever the claim protects commits
    -- later, synchronously, and that flush carries the claim's record too (WAL is flushed in
    -- order). A claim lost to a server crash protected nothing: its key is free again, as
    -- after a failed attempt. This call runs in its own short transaction (the caller's
    -- statement), so the setting ends with it.
    perform set_config('synchronous_commit', 'off', true);
    delete from private.idempotency_keys d
    where (d.scope, d.key) in (
        select x.scope, x.key from private.idempotency_keys x
        where x.expires_at < now()
          and (x.status = 'completed' or x.locked_until < now())
          and (x.scope, x.key) <> (p_scope, p_key)
        order by x.expires_at
        limit p_cleanup
        for update skip locked);
    insert into private.idempotency_keys as k
        (scope, key, request_hash, status, locked_until, expires_at)
    values (p_scope, p_key, p_hash, 'in_progress', now() + p_ttl_us * interval '1 microsecond',
            now() + p_expiry_us * interval '1 microsecond')
    on conflict (scope, key) do update set
        request_hash = excluded.request_hash,
        status = 'in_progress',
        response_status = null,
        response_headers = null,
        response_body = null,
        locked_until = excluded.locked_until,
        expires_at = excluded.expires_at,
        created_at = now()
    where (k.status = 'in_progress' and k.locked_until < now())
       or (k.status = 'completed' and k.expires_at < now())
    returning k.locked_until into idempotency_claim.locked_until;
end;
$$;

-- Stores a response as the outcome of the claim p_token holds, in the caller's transaction.
-- Raises (SQLSTATE PFI01) when the claim is no longer this attempt's: its lock ran out and a
-- later attempt took over, so this transaction must not commit.
create function private.idempotency_complete(
    p_scope text, p_key text, p_token timestamptz, p_status integer, p_headers jsonb, p_body bytea)
returns void
language plpgsql set search_path = ''
as $$
begin
    update private.idempotency_keys
    set status = 'completed', response_status = p_status, response_headers = p_headers,
        response_body = p_body, locked_until = null
    where scope = p_scope and key = p_key and status = 'in_progress' and locked_until = p_token;
    if not found then
        raise exception 'idempotency claim lost to a later attempt' using errcode = 'PFI01';
    end if;
end;
$$;

revoke all on function private.idempotency_claim(text, text, bytea, bigint, bigint, integer),
    private.idempotency_complete(text, text, timestamptz, integer, jsonb, bytea)
from public;
