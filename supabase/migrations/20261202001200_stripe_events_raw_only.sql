-- The inbox keeps each event once: the bytes Stripe signed (issue 12).
--
-- Every delivery stored its event twice, as jsonb (payload) and as the verified bytes
-- (raw_payload), about 3.5 KB each in the load driver's events. Measured on a throwaway
-- PostgreSQL 15 (one backend, backend CPU from /proc, 4,000 inserts through
-- private.record_stripe_event, repeated three times on a loaded 2-core box): the jsonb copy
-- cost about 150 µs of the insert's 290 µs (jsonb's parse of the text, and a 6.8 KB row: with
-- toast_tuple_target at 8160 neither copy was ever compressed, so each event took a page of
-- its own, a relation extension and 8 KB of WAL per delivery).
--
-- What still needs the jsonb: nothing on the webhook's path. The code reads an event from the
-- verified bytes (billing.lockStored and reconcile already preferred raw_payload); the one query
-- that looked inside the jsonb, the unmatched events of a customer, now reads customer_id, which
-- the webhook stores with the event. payload stays for the rows written before this migration
-- (and for ops' hand-written rows): new rows leave it null, and readers take
-- coalesce(raw_payload, convert_to(payload::text, 'UTF8')).
alter table private.stripe_events alter column payload drop not null;

comment on column private.stripe_events.payload is
    'the event as jsonb, for rows stored before 20261202001200; null since (raw_payload holds the event)';
comment on column private.stripe_events.raw_payload is
    'the event body exactly as Stripe signed it (for rows stored before 20261127000310 only payload has it)';

-- The Stripe customer the event's object belongs to (null when it names none or the type is not
-- one the webhook acts on): how billing.applyUnmatched finds a customer's unmatched events when
-- the customer is bound to a tenant.
alter table private.stripe_events add column customer_id text;
comment on column private.stripe_events.customer_id is
    'data.object.customer of the event, as the webhook read it (null when none or not a handled type)';

update private.stripe_events set customer_id = payload->'data'->'object'->>'customer'
where outcome = 'unmatched' and customer_id is null and payload is not null;

drop index private.stripe_events_unmatched_customer_idx;
create index stripe_events_unmatched_customer_idx on private.stripe_events (customer_id)
    where outcome = 'unmatched';

-- The tenant's deliveries by received_at served health.ForTenant's count, which the kept
-- counters (private.webhook_delivery_counts) replaced; ops' recount (health.Read for a tenant)
-- reads the tenant's range of stripe_events_tenant_created_idx instead. One index insert less
-- per delivery.
drop index private.stripe_events_tenant_received_idx;

-- One copy of about 3.5 KB compresses to about 55 % with LZ4 (already the column's method): keep
-- it compressed in the row, and let Postgres compress from the default threshold (2 KB) again.
-- Every text column of the row is storage main: compressed when worth it, moved out of line only
-- when the row still exceeds a page. With the default (extended), a row still above the 2 KB
-- threshold after compression has its other text values larger than a TOAST pointer (the event
-- id, its type, the customer) moved to the TOAST table one by one: three TOAST rows and index
-- entries per delivery instead of none. payload (older rows only) keeps the default.
alter table private.stripe_events
    alter column raw_payload set storage main,
    alter column id set storage main,
    alter column type set storage main,
    alter column api_version set storage main,
    alter column outcome set storage main,
    alter column customer_id set storage main;
alter table private.stripe_events reset (toast_tuple_target);

-- A live delivery's record, with the customer in place of the jsonb copy.
drop function private.record_stripe_event(text, text, text, timestamptz, boolean, text, bytea, text, uuid, boolean);
create function private.record_stripe_event(
    p_id text, p_type text, p_api_version text, p_created timestamptz, p_livemode boolean,
    p_customer text, p_raw bytea, p_outcome text, p_tenant uuid, p_crm_sync boolean)
returns void
language plpgsql set search_path = ''
as $$
begin
    insert into private.stripe_events (id, type, api_version, created, livemode, customer_id, raw_payload, outcome,
        tenant_id, applied_at, crm_sync)
    values (p_id, p_type, nullif(p_api_version, ''), p_created, p_livemode, nullif(p_customer, ''), p_raw, p_outcome,
        p_tenant, case when p_outcome = 'processed' then now() end, p_crm_sync);
end;
$$;
revoke all on function private.record_stripe_event(text, text, text, timestamptz, boolean, text, bytea, text, uuid, boolean)
from public;
