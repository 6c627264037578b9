-- The inbox's tenant is checked by its writers instead of a foreign key (issue 12). make
-- bench-pg (the backends' instructions per delivery of BenchmarkWebhookDelivery): 855,771
-- before, 818,028 after (-4.4 %); with prepared statements 649,162 before, 609,236 after
-- (-6.2 %).
--
-- stripe_events.tenant_id referenced public.tenants (on delete set null): every live delivery's
-- insert queued the foreign key's trigger, which ran its check query (SPI) and locked the
-- tenant's row FOR KEY SHARE (writing the lock into the tenants row). The webhook writes a
-- tenant into the inbox only under the tenant's billing account lock (shared/billing locks the
-- account before it applies the event, and records the event, counted = true, with the
-- account update in private.record_stripe_event_with_facets or after it in
-- private.record_stripe_event): the account row references the tenant (on delete cascade), so
-- a tenant being deleted waits for the delivery at its cascade to the account, and a delivery
-- that comes after the tenant's deletion finds no account (the claim) or fails the account's
-- own foreign key (lockAccount's insert).
--
-- So the constraint goes, and what it did stays:
--   * every other writer of a tenant (an insert that is not the webhook's record, counted
--     null; an update that changes tenant_id: reconcile's ApplyStored, the webhook's stored
--     path, ops) runs the inbox's counter trigger anyway, which now checks the tenant as the
--     foreign key did (a key-share lock on its row, foreign_key_violation when it is missing);
--   * a tenant's deletion sets its events' tenant_id to null, by a row trigger on
--     public.tenants that fires after the foreign keys' own (triggers fire in name order and
--     theirs are RI_ConstraintTrigger_*): so after the cascade to the billing account, which
--     waits for a delivery that holds the account, and whose event it then sees.

alter table private.stripe_events drop constraint stripe_events_tenant_id_fkey;

create or replace function private.webhook_delivery_counts_track() returns trigger
    language plpgsql set search_path = ''
as $$
declare
    horizon constant timestamptz := now() - interval '8 days';
    origin constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
    -- An update that keeps the event's tenant and bucket: one upsert of the difference.
    same boolean := tg_op = 'UPDATE' and coalesce(old.tenant_id = new.tenant_id
        and date_bin('5 minutes', old.received_at, origin) = date_bin('5 minutes', new.received_at, origin), false);
    created boolean;
begin
    -- The inbox's tenant, checked as the foreign key did (the webhook's own record, counted,
    -- holds the tenant's billing account instead).
    if tg_op <> 'DELETE' and new.tenant_id is not null and (tg_op = 'INSERT' or new.tenant_id is distinct from old.tenant_id) then
        perform from public.tenants t where t.id = new.tenant_id for key share;
        if not found then
            raise exception 'insert or update on table "stripe_events" violates the tenant reference: tenant % is not in public.tenants', new.tenant_id
                using errcode = 'foreign_key_violation';
        end if;
    end if;
    -- Not while the tenant is being deleted: its counter rows go with the cascade (before or
    -- after this), and a row written now would fail the counters' foreign key.
    if tg_op <> 'INSERT' and not same and old.tenant_id is not null and old.received_at >= horizon
            and exists (select from public.tenants t where t.id = old.tenant_id) then
        insert into private.webhook_delivery_counts as d
            (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
        values (old.tenant_id, date_bin('5 minutes', old.received_at, origin), -1,
                -(old.outcome = 'processed')::int, -(old.outcome = 'ignored')::int,
                -(old.outcome = 'unmatched')::int, -(old.outcome = 'refused')::int,
                -(old.outcome = 'processed' and old.applied_at is null)::int)
        on conflict (tenant_id, bucket) do update set
            received = d.received + excluded.received,
            processed = d.processed + excluded.processed,
            ignored = d.ignored + excluded.ignored,
            unmatched = d.unmatched + excluded.unmatched,
            refused = d.refused + excluded.refused,
            unapplied = d.unapplied + excluded.unapplied;
    end if;
    if tg_op <> 'DELETE' and new.tenant_id is not null and new.received_at >= horizon then
        insert into private.webhook_delivery_counts as d
            (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
        values (new.tenant_id, date_bin('5 minutes', new.received_at, origin),
                1 - same::int,
                (new.outcome = 'processed')::int - (same and old.outcome = 'processed')::int,
                (new.outcome = 'ignored')::int - (same and old.outcome = 'ignored')::int,
                (new.outcome = 'unmatched')::int - (same and old.outcome = 'unmatched')::int,
                (new.outcome = 'refused')::int - (same and old.outcome = 'refused')::int,
                (new.outcome = 'processed' and new.applied_at is null)::int
                    - (same and old.outcome = 'processed' and old.applied_at is null)::int)
        on conflict (tenant_id, bucket) do update set
            received = d.received + excluded.received,
            processed = d.processed + excluded.processed,
            ignored = d.ignored + excluded.ignored,
            unmatched = d.unmatched + excluded.unmatched,
            refused = d.refused + excluded.refused,
            unapplied = d.unapplied + excluded.unapplied
        returning (xmax = 0) into created;
        if created then
            delete from private.webhook_delivery_counts
            where tenant_id = new.tenant_id and bucket < horizon;
        end if;
    end if;
    return null;
end;
$$;

-- The foreign key's on delete set null. Security definer, as the foreign key's action ran
-- as the inbox's owner whoever deleted the tenant.
create function private.tenant_stripe_events_detach() returns trigger
    language plpgsql security definer set search_path = ''
as $$
begin
    update private.stripe_events set tenant_id = null where tenant_id = old.id;
    return null;
end;
$$;
revoke all on function private.tenant_stripe_events_detach() from public;
create trigger tenants_stripe_events_detach after delete on public.tenants
    for each row execute function private.tenant_stripe_events_detach();
