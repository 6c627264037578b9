-- private.idempotency_claim on kept (generic) plans (issue 13: ticket creation).
--
-- PL/pgSQL keeps a statement's plan only when Postgres chooses the generic plan, and for the
-- claim's clean-up (the delete of up to p_cleanup expired records, ordered by expires_at) it
-- kept choosing a custom plan: with the LIMIT a parameter, the generic plan of the old form
-- (a semi-join on (scope, key)) hashes a sequential scan of the whole table, so it looked
-- dearer, and rightly. Measured with pg_stat_statements (track = all, track_planning) at 300
-- tickets/s on make dev: the delete spent 0.18 ms planning for 0.025 ms of execution, on
-- every ticket. Now the delete takes the rows the sub-select locked by their ctid (a row
-- locked FOR UPDATE cannot move before this statement deletes it; one another transaction
-- changed first is re-checked by the lock and skipped when no longer expired), whose generic
-- plan is the custom one: the expires_at index in order, stopped at the limit, then a TID
-- scan. The function runs on generic plans only; the look-up and the upsert are primary-key
-- plans either way. Otherwise unchanged from migration idempotency_functions.

create or replace function private.idempotency_claim(
    p_scope text, p_key text, p_hash bytea, p_ttl_us bigint, p_expiry_us bigint, p_cleanup integer,
    out locked_until timestamptz, out status text, out request_hash bytea, out response_status integer,
    out response_headers jsonb, out response_body bytea, out retry_after integer)
language plpgsql set search_path = '' set plan_cache_mode = force_generic_plan
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
    where d.ctid = any (array(
        select x.ctid from private.idempotency_keys x
        where x.expires_at < now()
          and (x.status = 'completed' or x.locked_until < now())
          and (x.scope, x.key) <> (p_scope, p_key)
        order by x.expires_at
        limit p_cleanup
        for update skip locked));
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
