-- Jobs of one kind for one tenant: the portal's owner health (shared/health) and the
-- dead-letter list filtered by tenant (shared/jobs.DeadLetters) read private.river_job by
-- args->>'tenant_id', which River's GIN index on args cannot serve (it serves @> only). On
-- 200,000 jobs, EXPLAIN ANALYZE of the health query went from a parallel sequential scan
-- (149 ms) to an index scan (0.05 ms), and the tenant's dead letters from 5 ms to 1 ms.
create index river_job_kind_tenant_idx on private.river_job (kind, (args->>'tenant_id'));
