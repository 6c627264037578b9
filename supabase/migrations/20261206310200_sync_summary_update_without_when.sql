-- The sync summary's update trigger fires without a WHEN; the function itself returns at once
-- for an update that changes nothing it keeps (issue 12).
--
-- Postgres keeps a trigger's WHEN as a node string (pg_trigger.tgqual) and reads it back,
-- plans and compiles it for every statement that updates the table, before the first row.
-- sync_summary_update's WHEN compared five columns of old and new (state, last_success_at,
-- last_attempt_at, tenant_id, integration, two of them through their domains): about 65k
-- backend instructions for every statement that changes a sync status, which is every CRM
-- push the webhook queues while the tenant's last push has completed (production's case),
-- and every attempt a worker records.
--
-- Who updates a sync status, and whether the WHEN held:
-- - a worker's attempt (private.sync_status_record): sets last_attempt_at to the attempt's
--   time, so it held for every attempt;
-- - a queued push (private.river_insert_unique, shared/jobs.markPending): sets pending with
--   attempts 0 and leaves a status already pending with no attempt as it is; from any other
--   state it held, from pending with attempts counted (a push queued while the previous one
--   retries) it did not;
-- - ops: anything.
-- So the trigger now runs for the last two's updates that change nothing it keeps too, and
-- its first statement returns for those (the same comparison, of the three columns that can
-- change within a key; a change of key is always counted), without reading or writing
-- anything: the counts are those of before. callgrind on a throwaway PostgreSQL 15,
-- BenchmarkEnqueueCRMSyncInPipe/synced: 939k -> 870k backend instructions per transaction with a
-- new job (pending: unchanged, no update).

create or replace function private.sync_summary_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    same_key boolean := tg_op = 'UPDATE' and old.tenant_id = new.tenant_id and old.integration = new.integration;
    my_shard integer;
    tries integer := 1;
begin
    -- An update that changes nothing this summary keeps (sync_summary_update's WHEN until
    -- 20261206310200_sync_summary_update_without_when.sql).
    if tg_op = 'UPDATE' and same_key and old.state = new.state
            and old.last_success_at is not distinct from new.last_success_at
            and old.last_attempt_at is not distinct from new.last_attempt_at then
        return null;
    end if;
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

drop trigger sync_summary_update on private.sync_status;
create trigger sync_summary_update after update on private.sync_status
    for each row execute function private.sync_summary_track();
