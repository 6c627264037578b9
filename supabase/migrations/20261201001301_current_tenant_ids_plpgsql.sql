-- private.current_tenant_ids() in PL/pgSQL, so its query is planned once per connection instead
-- of on every call (issue 13).
--
-- Every RLS policy on tenant data calls it (as a hashed subplan: once per query and table),
-- so a portal read calls it two to four times. As a SQL function it cannot be inlined
-- (security definer, and its own search_path), so each call parsed, planned and ran its query
-- anew: 102 us a call, measured with track_functions = all over a pgbench run of the owner's
-- account and ticket reads as the user (-M extended, as pgx sends them), a fifth of the read's
-- database time. PL/pgSQL keeps the plan of its query for the connection's life; the query
-- has no parameters (auth.uid() and the setting are read when it runs), so the kept plan is
-- right for every user and request: 13 us a call, and the same read went from 2.8-3.2 ms to
-- 1.6-1.8 ms a transaction. The answer is the same: the caller's active memberships, narrowed
-- to app.tenant_id when a request selected one.
create or replace function private.current_tenant_ids() returns setof uuid
    language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select m.tenant_id from public.memberships m
    where m.user_id = auth.uid() and m.disabled_at is null
      and (nullif(current_setting('app.tenant_id', true), '') is null
           or m.tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
end;
$$;
