-- One ticket's writes that the kept delivery summary follows (migrations delivery_summary and
-- delivery_summary_per_transaction), without the rest of the ticket: the enqueue (River's job
-- row and the sync status marked pending, one transaction) and the worker's sync-status
-- record; summary-complete.sql is River's completer (a batch of up to 60 completions). Run
-- pgbench -M extended -D tenant=<a tenant's id> -f summary-writes.sql@10 -f summary-complete.sql@1,
-- with PGOPTIONS='-c track_functions=pl' to read each trigger's time per call in
-- pg_stat_user_functions; with -c 8 against one tenant, the waits sampled from pg_stat_activity
-- are the summary rows' lock waits. Queue summary_bench: no River client works these jobs.
\set n random(1, 2000000000)
begin;
insert into private.river_job (args, kind, max_attempts, priority, queue, state)
    values (jsonb_build_object('tenant_id', :tenant::text, 'ticket_id', :n::bigint), 'helpdesk_ticket', 25, 1, 'summary_bench', 'available');
insert into private.sync_status (integration, subject, tenant_id, state, attempts)
    values ('helpdesk', 'bench_' || :client_id || '_' || :n, :tenant::uuid, 'pending', 0)
    on conflict (integration, subject) do update set state = 'pending', attempts = 0, updated_at = now();
commit;
begin;
insert into private.sync_status (integration, subject, tenant_id, state, last_success_at, last_attempt_at, attempts, updated_at)
    values ('helpdesk', 'bench_' || :client_id || '_' || :n, :tenant::uuid, 'synced', now(), now(), 1, now())
    on conflict (integration, subject) do update set state = excluded.state,
        last_success_at = greatest(excluded.last_success_at, private.sync_status.last_success_at),
        last_attempt_at = greatest(excluded.last_attempt_at, private.sync_status.last_attempt_at),
        attempts = excluded.attempts, updated_at = excluded.updated_at;
commit;
