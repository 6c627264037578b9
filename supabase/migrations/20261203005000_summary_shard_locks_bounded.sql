-- A summary shard's advisory lock is the shard's alone, not the shard of one (tenant,
-- integration): a transaction holds at most 64 of them, in practice one, however many tenants
-- it changes (ops5; brief: ops statements and the advisory-lock table).
--
-- Before (20261202004300): a write held pg_try_advisory_xact_lock(hash(tenant, integration),
-- shard) until its commit, so a transaction held one lock per (tenant, integration) it changed.
-- River v0.51's maintenance works in batches of riversharedmaintenance.BatchSizeDefault =
-- 10,000 rows per statement (1,000 only after a timeout; the completer up to 5,000): the
-- cleaner deleting the dead (discarded, unresolved) jobs of 10,000 tenants a retention period
-- after an integration was down for all of them, or the rescuer discarding 10,000 stuck jobs,
-- held 10,000 advisory locks in one transaction. Postgres's lock table holds
-- max_locks_per_transaction (64 by default, as on Supabase) per connection slot, shared by
-- every transaction: with max_connections = 60 (Supabase Nano/Micro) both statements failed
-- with "out of shared memory" (SQLSTATE 53200), and while one holds the table, other
-- transactions that need a lock fail the same way; River shrinks its batch only after a
-- timeout, so the cleaner would fail like this on every run
-- (TestRiversLargestBatchesFitInTheLockTable, which also counts the locks held: 10,000 -> 1).
--
-- Now the lock of shard s is (hashtext('private.summary_shard'), s) for job_summary and
-- (hashtext('private.summary_shard'), 64 + s) for sync_summary, whatever the key:
-- - Exact as before: every writer of a shard row holds that shard's lock until its commit, so
--   an upsert never waits for a row lock, and every change lands in one row of its key.
-- - Bounded: a transaction first tries shard txid % 64 for every key it changes and holds it
--   after the first (advisory locks are re-entrant within a session): one lock for a batch of
--   any size, at most 64.
-- - Waits and deadlocks: a transaction that holds a shard never waits for one (its loop meets
--   the shard it holds within 64 tries), so only a transaction holding none can wait, and only
--   when 64 summary-writing transactions are open at once across all tenants (before: 64 of
--   one key, but a transaction holding one key's shard could wait on another key's).
-- - Cost: the second and later writes of a transaction hit a lock it holds (a local lookup)
--   instead of taking a new lock in the shared table per key.
-- Only the lock lines change; the functions are otherwise those of 20261202004300.

create or replace function private.sync_summary_add(p_tenant uuid, p_integration text, p_pending integer, p_retrying integer,
    p_failed integer, p_synced integer, p_success timestamptz, p_attempt timestamptz) returns void
    language plpgsql set search_path = ''
as $$
declare
    my_shard integer := txid_current() % 64;
    tries integer := 1;
begin
    while not pg_try_advisory_xact_lock(hashtext('private.summary_shard'), 64 + my_shard) loop
        if tries = 64 then
            perform pg_advisory_xact_lock(hashtext('private.summary_shard'), 64 + my_shard);
            exit;
        end if;
        tries := tries + 1;
        my_shard := (my_shard + 1) % 64;
    end loop;
    insert into private.sync_summary as s
        (tenant_id, integration, shard, pending, retrying, failed, synced, last_success_at, last_attempt_at)
    values (p_tenant, p_integration, my_shard, p_pending, p_retrying, p_failed, p_synced, p_success, p_attempt)
    on conflict (tenant_id, integration, shard) do update set
        pending = s.pending + excluded.pending,
        retrying = s.retrying + excluded.retrying,
        failed = s.failed + excluded.failed,
        synced = s.synced + excluded.synced,
        last_success_at = greatest(s.last_success_at, excluded.last_success_at),
        last_attempt_at = greatest(s.last_attempt_at, excluded.last_attempt_at);
end;
$$;

create or replace function private.sync_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    same_key boolean := tg_op = 'UPDATE' and old.tenant_id = new.tenant_id and old.integration = new.integration;
    my_shard integer;
    tries integer := 1;
begin
    if tg_op = 'DELETE' or (tg_op = 'UPDATE' and not same_key) then
        -- The old state leaves the old key. Not for a tenant being deleted: its cascade
        -- takes its summary rows, and an insert would resurrect them (and fail the key).
        -- (A separate if: a condition with a subquery would run the executor on every call.)
        if exists (select from public.tenants t where t.id = old.tenant_id) then
            perform private.sync_summary_add(old.tenant_id, old.integration, -(old.state = 'pending')::int,
                -(old.state = 'retrying')::int, -(old.state = 'failed')::int, -(old.state = 'synced')::int, null, null);
        end if;
    end if;
    if tg_op = 'DELETE' then
        return null;
    end if;
    -- The new state (inline: the path of every insert and update, which a function call
    -- would make about 50 us dearer).
    my_shard := txid_current() % 64;
    while not pg_try_advisory_xact_lock(hashtext('private.summary_shard'), 64 + my_shard) loop
        if tries = 64 then
            perform pg_advisory_xact_lock(hashtext('private.summary_shard'), 64 + my_shard);
            exit;
        end if;
        tries := tries + 1;
        my_shard := (my_shard + 1) % 64;
    end loop;
    insert into private.sync_summary as s
        (tenant_id, integration, shard, pending, retrying, failed, synced, last_success_at, last_attempt_at)
    values (new.tenant_id, new.integration, my_shard,
            (new.state = 'pending')::int - (same_key and old.state = 'pending')::int,
            (new.state = 'retrying')::int - (same_key and old.state = 'retrying')::int,
            (new.state = 'failed')::int - (same_key and old.state = 'failed')::int,
            (new.state = 'synced')::int - (same_key and old.state = 'synced')::int,
            new.last_success_at, new.last_attempt_at)
    on conflict (tenant_id, integration, shard) do update set
        pending = s.pending + excluded.pending,
        retrying = s.retrying + excluded.retrying,
        failed = s.failed + excluded.failed,
        synced = s.synced + excluded.synced,
        last_success_at = greatest(s.last_success_at, excluded.last_success_at),
        last_attempt_at = greatest(s.last_attempt_at, excluded.last_attempt_at);
    return null;
end;
$$;

create or replace function private.job_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    j private.river_job;
    tenant uuid;
    integ text;
    d_waiting integer := 0;
    d_dead integer := 0;
    old_errors integer := 0;
    e jsonb;
    my_shard integer;
    tries integer := 1;
begin
    if tg_op = 'DELETE' then j := old; else j := new; end if;
    if coalesce(j.args->>'tenant_id', '') !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
        return null;
    end if;
    tenant := (j.args->>'tenant_id')::uuid;
    integ := case j.kind when 'crm_sync' then 'crm' else 'helpdesk' end;
    if tg_op <> 'INSERT' then
        d_waiting := d_waiting - (old.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead - (old.state in ('discarded', 'cancelled') and not old.metadata ? 'resolved_at')::int;
        old_errors := coalesce(cardinality(old.errors), 0);
    end if;
    if tg_op <> 'DELETE' then
        d_waiting := d_waiting + (new.state in ('available', 'pending', 'retryable', 'running', 'scheduled'))::int;
        d_dead := d_dead + (new.state in ('discarded', 'cancelled') and not new.metadata ? 'resolved_at')::int;
    end if;
    if d_waiting <> 0 or d_dead <> 0 then
        -- The first shard whose advisory lock (second key: the shard) this transaction gets
        -- without waiting (no foreign key here, so a delete may add its negative change to a
        -- new row too).
        my_shard := txid_current() % 64;
        while not pg_try_advisory_xact_lock(hashtext('private.summary_shard'), my_shard) loop
            if tries = 64 then
                perform pg_advisory_xact_lock(hashtext('private.summary_shard'), my_shard);
                exit;
            end if;
            tries := tries + 1;
            my_shard := (my_shard + 1) % 64;
        end loop;
        insert into private.job_summary as s (tenant_id, integration, shard, waiting, dead)
        values (tenant, integ, my_shard, d_waiting, d_dead)
        on conflict (tenant_id, integration, shard) do update set
            waiting = s.waiting + excluded.waiting, dead = s.dead + excluded.dead;
    end if;
    if tg_op <> 'DELETE' then
        if coalesce(cardinality(new.errors), 0) > old_errors then
            foreach e in array new.errors[old_errors + 1:] loop
                perform private.job_attempts_add(tenant, integ, (e->>'at')::timestamptz, 0, 1);
            end loop;
        end if;
        if new.state = 'completed' and (tg_op = 'INSERT' or old.state <> 'completed') then
            perform private.job_attempts_add(tenant, integ, new.finalized_at, 1, 0);
        end if;
    end if;
    return null;
end;
$$;
