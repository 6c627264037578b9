-- private.idempotency_claim's clean-up deletes each expired record by its own ctid (issue 13:
-- ticket creation, p95 rising run after run on one make dev).
--
-- The claim runs on generic plans, made at its first call in a session and kept for the
-- session's life (behind Supavisor's transaction pooler, the life of a pooled backend). The
-- form of migration idempotency_claim_generic_plan, delete ... where ctid = any (array(...)),
-- got a TID scan only when the table was large at that first call: planned against an empty
-- or small table, the delete was a sequential scan of idempotency_keys filtered on the array,
-- and that plan stayed while the table grew, so every claim read every stored key (24 hours of
-- them), even when nothing had expired. At 300 tickets/s on make dev, pg_stat_statements had
-- the claim at 0.42, 0.73 and 1.14 ms a call over three back-to-back runs (13,500 keys), all
-- other statements flat; auto_explain showed the sequential scan. A delete of one ctid is a
-- TID scan at any size, so the locked rows are now deleted one by one (at most p_cleanup, and
-- none when nothing has expired; a row locked FOR UPDATE cannot move before its delete).
-- Otherwise unchanged from migration idempotency_claim_generic_plan.

create or replace function private.idempotency_claim(
    p_scope text, p_key text, p_hash bytea, p_ttl_us bigint, p_expiry_us bigint, p_cleanup integer,
    out locked_until timestamptz, out status text, out request_hash bytea, out response_status integer,
    out response_headers jsonb, out response_body bytea, out retry_after integer)
language plpgsql set search_path = '' set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
    expired tid;
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
    for expired in
        select x.ctid from private.idempotency_keys x
        where x.expires_at < now()
          and (x.status = 'completed' or x.locked_until < now())
          and (x.scope, x.key) <> (p_scope, p_key)
        order by x.expires_at
        limit p_cleanup
        for update skip locked
    loop
        delete from private.idempotency_keys d where d.ctid = expired;
    end loop;
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
