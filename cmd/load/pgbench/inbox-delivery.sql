-- One webhook delivery's writes to the Stripe inbox, as shared/billing sends them today: the
-- claim (no tenant yet), then the outcome and tenant before the commit. pgbench -M extended
-- -D tenant=<a tenant's id>; BENCHMARKS.md (Portal reads) has the run and its figures.
\set n random(1, 2000000000)
begin;
insert into private.stripe_events (id, type, api_version, created, livemode, payload, raw_payload, outcome)
    values ('evt_bench_' || :client_id || '_' || :n, 'invoice.paid', '2023-10-16', now(), false, '{"object":"event"}'::jsonb, '\x7b7d'::bytea, 'processed')
    on conflict (id) do nothing;
update private.stripe_events set outcome = 'processed', tenant_id = :tenant, applied_at = now(), crm_sync = true
    where id = 'evt_bench_' || :client_id || '_' || :n;
commit;
