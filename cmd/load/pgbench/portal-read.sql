-- An owner's account and first ticket page as the user under RLS, one statement at a time, as
-- the portal sent them before its reads went through PL/pgSQL functions: pgbench -M extended
-- (unnamed statements, planned each time, as pgx sends them) against -M prepared shows what
-- planning costs a read. pgbench -D tenant=<id> -D user=<owner's user id>.
begin;
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', '{"sub":"' || :user || '","role":"authenticated"}', true),
       set_config('request.jwt.claim.sub', :user, true), set_config('request.jwt.claim.role', 'authenticated', true),
       set_config('app.tenant_id', :tenant, true);
select tenant_id, name, billing_status, billing_message, plan, current_period_end, cancel_at_period_end, last_payment_at,
       last_payment_amount, last_payment_currency, last_failure_at, billing_updated_at
    from public.portal_account where tenant_id = :tenant::uuid;
select integration, state, message, waiting, failed, last_success_at, last_attempt_at
    from public.portal_sync_summary where tenant_id = :tenant::uuid;
select id, subject, category, priority, status, status_message, source, created_at, updated_at, attachments
    from public.portal_tickets where tenant_id = :tenant::uuid order by created_at desc, id desc limit 21;
commit;
