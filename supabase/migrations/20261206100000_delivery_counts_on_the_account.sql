-- A live processed delivery counts itself on the billing account row it already updates,
-- instead of upserting private.webhook_delivery_counts (issue 12). make bench-pg (the
-- backends' instructions per delivery of BenchmarkWebhookDelivery): 904,817 before, 855,771
-- after (-5.4 %); with prepared statements 695,671 before, 649,162 after (-6.7 %).
--
-- private.record_stripe_event_with_facets updated the account, inserted the event and
-- upserted the tenant's counter row of the 5-minute bucket: three row changes, the upsert the
-- dearest (a speculative insertion into the primary key, the conflict, the row locked and a
-- new row version, about 80k instructions). The account row is the one every processed
-- delivery of the tenant updates anyway, under the account's lock, so it now keeps the
-- tenant's current bucket (delivery_bucket) and how many processed deliveries it received
-- there (bucket_deliveries), in the same UPDATE. When a delivery lands in another bucket the
-- account's finished bucket goes into webhook_delivery_counts (the one upsert a tenant's
-- deliveries make per 5 minutes): the UPDATE hands the finished bucket back through
-- rolled_bucket and rolled_deliveries (PostgreSQL 15's RETURNING sees only the new row), and
-- the upsert goes after the event's insert, as the counter's write went before.
--
-- The counts of a tenant and bucket are now the table's row plus the account's current
-- bucket: private.webhook_delivery_buckets is both, and what every reader sums
-- (private.tenant_health, i.e. health.ForTenant and the owner's GET /v1/account). Every other
-- writer keeps writing the table, as a difference that may make a row negative while the
-- account holds the rest of its bucket:
--   * the inbox's row triggers (other writers' inserts, reconcile's ApplyStored, an event
--     moved or deleted): the side that takes an event out of a bucket is an upsert now, not
--     an update of a row that may not exist (the count it takes may be on the account), except
--     while the tenant is being deleted (its counters go with it, and a new row would fail the
--     foreign key);
--   * an account row deleted while its tenant stays moves its current bucket into the table
--     (a row trigger; the tenant's deletion cascades both away);
--   * ops' recount (private.recount_webhook_delivery_counts, run by rebuild_delivery_summary
--     with the inbox locked) writes the inbox's counts minus what the accounts hold, so that
--     the sum is the inbox's; it writes nothing to the accounts, which a delivery locks before
--     the inbox (resetting them there could deadlock with a delivery waiting on the inbox).
--
-- The account's row value grows by these four columns, and code deployed before this reads
-- the claim's whole-row account by position (33 fields): private.webhook_claim_rows now
-- returns the account's 33 columns as before, built by column, and the code of this migration
-- calls private.webhook_claim_account_rows, the whole-row read.
--
-- The upsert cost about 80k; the saving is net of the four fields more in the claim's
-- whole-row answer (about 8k: each field is sent) and of the update's four more targets and
-- the PL/pgSQL statements that decide on a roll-over (most of the rest). Written the other way round (the bucket's date_bin inline in the update three
-- times, the finished bucket chosen by a CASE in RETURNING, one IF fewer) it cost 8k more: a
-- cached plan builds its expressions again at every execution, where PL/pgSQL builds a simple
-- expression's state once a transaction.

-- No delivery may write between the columns' creation and the functions' replacement.
lock table private.billing_accounts, private.stripe_events in share row exclusive mode;

alter table private.billing_accounts
    add column delivery_bucket timestamptz,
    add column bucket_deliveries integer not null default 0,
    add column rolled_bucket timestamptz,
    add column rolled_deliveries integer not null default 0;
comment on column private.billing_accounts.delivery_bucket is
    'The 5-minute bucket (of received_at) of the tenant''s last processed live delivery; its count is bucket_deliveries, which private.webhook_delivery_buckets adds to private.webhook_delivery_counts';
comment on column private.billing_accounts.bucket_deliveries is
    'Processed live deliveries received in delivery_bucket and not in private.webhook_delivery_counts (received and processed, applied)';
comment on column private.billing_accounts.rolled_bucket is
    'Set by private.record_stripe_event_with_facets only for its RETURNING: delivery_bucket before the delivery; not a count';
comment on column private.billing_accounts.rolled_deliveries is
    'Set by private.record_stripe_event_with_facets only for its RETURNING: bucket_deliveries before the delivery; not a count';

-- What the readers sum: the table's rows and each account's current bucket.
create view private.webhook_delivery_buckets with (security_invoker = true) as
    select d.tenant_id, d.bucket, d.received, d.processed, d.ignored, d.unmatched, d.refused, d.unapplied
    from private.webhook_delivery_counts d
    union all
    select a.tenant_id, a.delivery_bucket, a.bucket_deliveries, a.bucket_deliveries, 0, 0, 0, 0
    from private.billing_accounts a
    where a.bucket_deliveries <> 0;
revoke all on private.webhook_delivery_buckets from public, anon, authenticated;
comment on view private.webhook_delivery_buckets is
    'Stripe deliveries per tenant and 5-minute bucket: private.webhook_delivery_counts plus each billing account''s current bucket; sum by (tenant_id, bucket) (a bucket may have a row in each)';

create or replace function private.record_stripe_event_with_facets(
    p_id text, p_type text, p_api_version text, p_created timestamptz, p_livemode boolean,
    p_customer text, p_raw bytea, p_outcome text, p_tenant uuid, p_crm_sync boolean,
    p_account_customer text, p_customer_created timestamptz, p_customer_event text,
    p_email text, p_email_created timestamptz, p_email_event text,
    p_paid_at timestamptz, p_amount bigint, p_currency text,
    p_invoice text, p_payment_created timestamptz, p_payment_event text,
    p_failed_at timestamptz, p_failure_reason text, p_failure_invoice text,
    p_failure_created timestamptz, p_failure_event text,
    p_source_created timestamptz, p_source_event text, p_crm_changed boolean)
returns void
language plpgsql set search_path = ''
as $$
declare
    this_bucket constant timestamptz := date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00:00+00');
    rolled timestamptz;
    n integer;
    created boolean;
begin
    if p_outcome is distinct from 'processed' then
        raise exception 'stripe event outcome % is not processed: only a processed event saves facets', p_outcome
            using errcode = 'check_violation';
    end if;
    update private.billing_accounts a set
        customer_id = p_account_customer, customer_event_created = p_customer_created,
        customer_event_id = p_customer_event,
        customer_email = p_email, email_event_created = p_email_created, email_event_id = p_email_event,
        last_payment_at = p_paid_at, last_payment_amount = p_amount, last_payment_currency = p_currency,
        last_invoice_id = p_invoice, payment_event_created = p_payment_created, payment_event_id = p_payment_event,
        last_failure_at = p_failed_at, last_failure_reason = p_failure_reason,
        last_failure_invoice_id = p_failure_invoice,
        failure_event_created = p_failure_created, failure_event_id = p_failure_event,
        source_event_created = p_source_created, source_event_id = p_source_event,
        crm_version = a.crm_version + case when p_crm_changed then 1 else 0 end,
        updated_at = now(),
        delivery_bucket = this_bucket,
        bucket_deliveries = case when a.delivery_bucket = this_bucket then a.bucket_deliveries + 1 else 1 end,
        rolled_bucket = a.delivery_bucket,
        rolled_deliveries = a.bucket_deliveries
    where a.tenant_id = p_tenant
    returning a.rolled_bucket, a.rolled_deliveries into rolled, n;
    -- n: how many deliveries of the bucket rolled the account finished (0: its bucket goes on).
    if not found then
        -- No account row (not a path shared/billing takes): the table counts the delivery.
        rolled := this_bucket;
        n := 1;
    elsif rolled = this_bucket then
        n := 0;
    end if;
    insert into private.stripe_events (id, type, api_version, created, livemode, customer_id, raw_payload,
        outcome, tenant_id, applied_at, crm_sync, counted)
    values (p_id, p_type, p_api_version, p_created, p_livemode, p_customer, p_raw,
        'processed', p_tenant, now(), p_crm_sync, true);
    -- After the inbox, as the counters' writes always were (ops' recount locks the inbox first).
    if n <> 0 then
        if rolled >= now() - interval '8 days' then
            insert into private.webhook_delivery_counts as d (tenant_id, bucket, received, processed)
            values (p_tenant, rolled, n, n)
            on conflict (tenant_id, bucket) do update set received = d.received + excluded.received,
                processed = d.processed + excluded.processed
            returning (xmax = 0) into created;
            if created then
                delete from private.webhook_delivery_counts
                where tenant_id = p_tenant and bucket < now() - interval '8 days';
            end if;
        end if;
    end if;
end;
$$;

-- The inbox's row trigger: as before, except that taking an event out of a bucket writes a
-- difference (an upsert) instead of updating the row only when it exists.
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

-- An account row deleted while its tenant stays (ops; tests) hands its current bucket to the
-- table. A tenant's deletion cascades to the account and the counters alike: nothing to keep.
create function private.billing_account_deliveries_keep() returns trigger
    language plpgsql set search_path = ''
as $$
begin
    if old.delivery_bucket >= now() - interval '8 days'
            and exists (select from public.tenants t where t.id = old.tenant_id) then
        insert into private.webhook_delivery_counts as d (tenant_id, bucket, received, processed)
        values (old.tenant_id, old.delivery_bucket, old.bucket_deliveries, old.bucket_deliveries)
        on conflict (tenant_id, bucket) do update set received = d.received + excluded.received,
            processed = d.processed + excluded.processed;
    end if;
    return null;
end;
$$;
create trigger billing_accounts_deliveries_keep after delete on private.billing_accounts
    for each row when (old.bucket_deliveries <> 0)
    execute function private.billing_account_deliveries_keep();

-- Ops' recount: the table holds the inbox's counts minus the accounts' current buckets, so
-- that private.webhook_delivery_buckets sums to the inbox's. One statement reads both (one
-- snapshot); the caller holds the inbox's lock, and a delivery writes its account before the
-- inbox, so a delivery under way has neither its event nor its account's count committed.
create or replace function private.recount_webhook_delivery_counts(p_tenant uuid) returns void
    language sql set search_path = ''
as $$
    delete from private.webhook_delivery_counts where p_tenant is null or tenant_id = p_tenant;
    insert into private.webhook_delivery_counts (tenant_id, bucket, received, processed, ignored, unmatched, refused, unapplied)
    select tenant_id, bucket, sum(received), sum(processed), sum(ignored), sum(unmatched), sum(refused), sum(unapplied)
    from (
        select tenant_id, date_bin('5 minutes', received_at, timestamptz '2000-01-01 00:00:00+00') as bucket,
               count(*) as received,
               count(*) filter (where outcome = 'processed') as processed,
               count(*) filter (where outcome = 'ignored') as ignored,
               count(*) filter (where outcome = 'unmatched') as unmatched,
               count(*) filter (where outcome = 'refused') as refused,
               count(*) filter (where outcome = 'processed' and applied_at is null) as unapplied
        from private.stripe_events
        where tenant_id is not null and (p_tenant is null or tenant_id = p_tenant)
          and received_at >= now() - interval '8 days'
        group by 1, 2
        union all
        select tenant_id, delivery_bucket, -bucket_deliveries, -bucket_deliveries, 0, 0, 0, 0
        from private.billing_accounts
        where bucket_deliveries <> 0 and (p_tenant is null or tenant_id = p_tenant)
          and delivery_bucket >= now() - interval '8 days'
    ) c
    group by 1, 2;
$$;

-- The owner's health (shared/health.ForTenant's statement) sums both sources.
create or replace function private.tenant_health(uuid, double precision, text)
    returns table (until timestamptz, received integer, processed integer, ignored integer, unmatched integer,
                   refused integer, unapplied integer, integration text, waiting integer, dead integer,
                   succeeded integer, failed integer, failing_subjects integer, last_success_at timestamptz,
                   oldest_waiting_at timestamptz)
    language plpgsql stable set search_path = ''
as $$
#variable_conflict use_column
begin
    return query
    with ev as (
        select coalesce(sum(d.received), 0)::int as received,
               coalesce(sum(d.processed), 0)::int as processed,
               coalesce(sum(d.ignored), 0)::int as ignored,
               coalesce(sum(d.unmatched), 0)::int as unmatched,
               coalesce(sum(d.refused), 0)::int as refused,
               coalesce(sum(d.unapplied), 0)::int as unapplied
        from private.webhook_delivery_buckets d
        where d.tenant_id = $1
          and d.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
          and d.bucket <= now())
    select now(), ev.received, ev.processed, ev.ignored, ev.unmatched, ev.refused, ev.unapplied,
           i.integration, coalesce(j.waiting, 0), coalesce(j.dead, 0),
           coalesce(a.succeeded, 0), coalesce(a.failed, 0), coalesce(s.failed, 0), s.last_success_at,
           case when j.waiting > 0 then (
               select r.created_at from private.river_job r
               where r.kind = i.kind and r.args->>'tenant_id' = $3
                 and r.state in ('available', 'pending', 'retryable', 'running', 'scheduled')
               order by r.created_at limit 1) end
    from ev
    cross join (values ('crm', 'crm_sync'), ('helpdesk', 'helpdesk_ticket')) as i (integration, kind)
    left join lateral (
        select sum(js.waiting)::int as waiting, sum(js.dead)::int as dead
        from private.job_summary js where js.tenant_id = $1 and js.integration = i.integration
    ) j on true
    left join lateral (
        select sum(ss.failed)::int as failed, max(ss.last_success_at) as last_success_at
        from private.sync_summary ss where ss.tenant_id = $1 and ss.integration = i.integration
    ) s on true
    left join lateral (
        select sum(b.succeeded)::int as succeeded, sum(b.failed)::int as failed
        from private.job_attempts b
        where b.tenant_id = $1 and b.integration = i.integration
          and b.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
          and b.bucket <= now()
    ) a on true
    order by i.integration;
end;
$$;

-- The claim with the account's whole row, as it is now (shared/billing.accountColumns).
create function private.webhook_claim_account_rows(p_event text, p_customer text, p_rule boolean, p_subscriptions boolean)
returns record
language plpgsql set search_path = ''
as $$
declare
    seen boolean;
    acct record;
    on_failure boolean;
    contact text;
    subs private.billing_subscriptions[];
begin
    perform from private.stripe_events e where e.id = p_event;
    seen := found;
    if seen or p_customer is null then
        return row(seen, null::boolean, null::text, null::private.billing_accounts, subs);
    end if;
    select a into acct
    from private.billing_accounts a
    where a.tenant_id = (select c.tenant_id from private.stripe_customers c where c.customer_id = p_customer)
    for update;
    if not found then
        return row(seen, null::boolean, null::text, null::private.billing_accounts, subs);
    end if;
    if p_rule then
        select tn.ticket_on_payment_failure, tn.contact_email
        into on_failure, contact
        from public.tenants tn where tn.id = (acct.a).tenant_id;
    end if;
    if p_subscriptions then
        select array_agg(bs) into subs
        from private.billing_subscriptions bs where bs.tenant_id = (acct.a).tenant_id;
    end if;
    return row(seen, on_failure, contact, acct.a, subs);
end;
$$;
revoke all on function private.webhook_claim_account_rows(text, text, boolean, boolean) from public;

-- For code deployed before this migration: the account as its 33 columns of then, in order.
create or replace function private.webhook_claim_rows(p_event text, p_customer text, p_rule boolean, p_subscriptions boolean)
returns record
language plpgsql set search_path = ''
as $$
declare
    seen boolean;
    acct record;
    on_failure boolean;
    contact text;
    subs private.billing_subscriptions[];
begin
    perform from private.stripe_events e where e.id = p_event;
    seen := found;
    if seen or p_customer is null then
        return row(seen, null::boolean, null::text, null::private.billing_accounts, subs);
    end if;
    select a.tenant_id as t, row(a.tenant_id, a.customer_id, a.customer_email, a.subscription_id, a.price_id, a.plan,
        a.status, a.current_period_end, a.cancel_at_period_end, a.last_payment_at, a.last_payment_amount,
        a.last_payment_currency, a.last_invoice_id, a.last_failure_at, a.last_failure_reason,
        a.source_event_created, a.source_event_id, a.created_at, a.updated_at, a.customer_event_created,
        a.customer_event_id, a.email_event_created, a.email_event_id, a.subscription_event_created,
        a.subscription_event_id, a.status_event_created, a.status_event_id, a.payment_event_created,
        a.payment_event_id, a.failure_event_created, a.failure_event_id, a.last_failure_invoice_id, a.crm_version) as a
    into acct
    from private.billing_accounts a
    where a.tenant_id = (select c.tenant_id from private.stripe_customers c where c.customer_id = p_customer)
    for update;
    if not found then
        return row(seen, null::boolean, null::text, null::private.billing_accounts, subs);
    end if;
    if p_rule then
        select tn.ticket_on_payment_failure, tn.contact_email
        into on_failure, contact
        from public.tenants tn where tn.id = acct.t;
    end if;
    if p_subscriptions then
        select array_agg(bs) into subs
        from private.billing_subscriptions bs where bs.tenant_id = acct.t;
    end if;
    return row(seen, on_failure, contact, acct.a, subs);
end;
$$;
revoke all on function private.webhook_claim_rows(text, text, boolean, boolean) from public;
