-- RLS as the second wall for the ONE tenant a function request acts for.
--
-- A user in several tenants selects one per request (X-Tenant-Id); shared/tenant then runs the
-- request as the user (role authenticated + request.jwt.claims, as PostgREST does) and also
-- sets app.tenant_id for the transaction. private.current_tenant_ids() keeps answering every
-- active membership of auth.uid() when app.tenant_id is unset (PostgREST, supabase-js), and
-- only the selected one when it is set. The setting can only narrow: it is intersected with
-- the caller's own active memberships, so setting it never grants anything.
create or replace function private.current_tenant_ids() returns setof uuid
    language sql stable security definer set search_path = ''
as $$
    select m.tenant_id from public.memberships m
    where m.user_id = (select auth.uid()) and m.disabled_at is null
      and (nullif(current_setting('app.tenant_id', true), '') is null
           or m.tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
$$;
revoke all on function private.current_tenant_ids() from public;
grant execute on function private.current_tenant_ids() to authenticated;

-- A user's own memberships, held to the same rule: only active ones, and only the selected
-- tenant's when a request selected one (a member of several tenants acting for A does not
-- see that it also belongs to B). Through PostgREST a user still lists all their active
-- tenants, which is what a tenant picker needs.
drop policy memberships_select_own on public.memberships;
create policy memberships_select_own on public.memberships for select to authenticated
    using (user_id = (select auth.uid()) and tenant_id in (select private.current_tenant_ids()));
