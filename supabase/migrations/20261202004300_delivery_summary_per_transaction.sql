-- The kept delivery summary's writes take a shard that no other transaction holds, instead of
-- the shard of their connection (issue 13: ticket creation's lock waits; issue 12: the same
-- triggers on the webhook's path).
--
-- Before: a write added its change to shard pg_backend_pid() % 16 of its (tenant,
-- integration), with an upsert that waits for the row's lock. Two pool connections whose pids
-- collide modulo 16 met on the same row in every transaction, each waiting for the other's
-- commit (and so for its WAL flush), and River's completer held its connection's row across a
-- batch of about 60 completions. Measured on make dev at 300 tickets/s, sampling
-- pg_stat_activity every 10 ms: about 4 % of the active backends' samples were
-- Lock:transactionid on river_insert_unique and the sync-status upsert, blocked by another
-- ticket's commit or by the completer's batch. A shard per transaction (its id modulo 16 or
-- 32) did not help: 10 to 16 tickets are in flight at once and their ids are interleaved with
-- the other transactions' ids, so two of them share a shard about as often as random picks.
-- Skipping locked rows (select ... for update skip locked) removed the waits but cost 25 to 60
-- us more a call (a tuple lock, a second index scan).
--
-- Now a write claims its shard with a transaction-scoped advisory lock, taken without waiting
-- (pg_try_advisory_xact_lock on the key's hash and the shard: lock-manager memory, no WAL):
-- it tries shard txid_current() % 64 first, then the next ones, and upserts the first shard it
-- holds. Every writer of a shard row holds that shard's advisory lock until its commit, as
-- long as it holds the row's lock, so the upsert never waits for a row lock; only when all
-- 64 shards of a key are held by other transactions does a write wait, on the advisory lock
-- of its first pick. The same transaction tries the same shard first for every write of a key
-- (its id does not change), and holds it already, so it keeps using one row.
--
-- Exact: every change lands in exactly one row of its key; readers sum the rows. A hash
-- collision between two keys only makes a shard look busy to the other key.
--
-- Deadlocks: a write waits only when every one of the 64 shards of its key is held by another
-- transaction, and then on one advisory lock (which the deadlock detector sees like any other
-- lock). Shards it got with a try-lock never make it wait, so a cycle needs 64 concurrent
-- writers of one (tenant, integration) and then a second key in the same state, with the
-- transactions in opposite orders: more than the pool's connections. A transaction holding
-- two shards of one key (possible only when its first pick was taken by another transaction
-- between two of its writes) got both without waiting. The old delete path updated "any" row
-- by ctid, which could lose its change when that row was updated concurrently (the re-check
-- after the wait compared the row's new ctid with the old one); it now takes a shard too.
--
-- Limit: a transaction holds one advisory lock per (tenant, integration) it changes, in the
-- shared lock table (max_locks_per_transaction x connections, about 6,400 by default); River's
-- batches (completer, cleaner: up to 1,000 rows) fit, but one statement that changes the jobs
-- of many thousands of tenants at once would fail with "out of shared memory" (counting
-- nothing wrong): such an ops change goes in batches.
--
-- Reads sum at most 64 rows per (tenant, integration), through the primary key (portal views
-- and health unchanged), and in practice as many as writers ever met on the key at once;
-- rebuild_delivery_summary writes shard 0.

-- Add a change to one row of a (tenant, integration) of private.sync_summary: the first shard
-- whose advisory lock (second key 64 + shard) this transaction gets without waiting. The rare
-- path of sync_summary_track (a delete, or a subject moved to another key), which inlines the
-- same for the new state.
create function private.sync_summary_add(p_tenant uuid, p_integration text, p_pending integer, p_retrying integer,
    p_failed integer, p_synced integer, p_success timestamptz, p_attempt timestamptz) returns void
    language plpgsql set search_path = ''
as $$
declare
    lock_key constant integer := hashtext(p_tenant::text || p_integration);
    my_shard integer := txid_current() % 64;
    tries integer := 1;
begin
    while not pg_try_advisory_xact_lock(lock_key, 64 + my_shard) loop
        if tries = 64 then
            perform pg_advisory_xact_lock(lock_key, 64 + my_shard);
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
    lock_key integer;
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
    lock_key := hashtext(new.tenant_id::text || new.integration);
    my_shard := txid_current() % 64;
    while not pg_try_advisory_xact_lock(lock_key, 64 + my_shard) loop
        if tries = 64 then
            perform pg_advisory_xact_lock(lock_key, 64 + my_shard);
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
    lock_key integer;
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
        lock_key := hashtext(tenant::text || integ);
        my_shard := txid_current() % 64;
        while not pg_try_advisory_xact_lock(lock_key, my_shard) loop
            if tries = 64 then
                perform pg_advisory_xact_lock(lock_key, my_shard);
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
