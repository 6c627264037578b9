-- The webhook's claim reads the tenant's projection and its subscriptions as whole rows
-- (issue 12). Measured with callgrind on a throwaway PostgreSQL 15 (make bench-pg, the
-- backends' instructions per delivery of BenchmarkWebhookDelivery): 1,182,905 before, 1,078,039
-- after (-8.9 %); with prepared statements (pgx.QueryExecModeCacheStatement) 928,149 before,
-- 821,744 after (-11.5 %). The Go side allocates less too (398 allocations a delivery, 380).
--
-- private.webhook_claim's plans are cached, yet each of its statements pays its executor start
-- on every call, and that start grows with the statement's width: the locked read of the
-- account selected 29 columns into 29 fields (a projection of 29 expressions and a result
-- descriptor of 29 entries built each time), and the subscriptions were ten array_agg's (ten
-- aggregates initialised each time, each with its transition function looked up). Now the
-- account is read as one whole-row value (select a ... for update: one expression, one column)
-- and the subscriptions as one array_agg of the row type. The claim returns both as they are,
-- inside its record: (seen, ticket_on_payment_failure, contact_email, account, subscriptions).
--
-- A row value's fields are the table's columns in the table's order, without dropped ones;
-- shared/billing reads them by position (accountColumns, subscriptionColumns) and a test
-- (TestClaimReadsTheTablesColumnsInOrder) fails when the tables' columns no longer match, so a
-- migration that changes them changes the Go side with them. Their types are ones pgx knows
-- (the row types themselves are not: their binary form is a record's, which the Go side reads
-- as one, so no type needs loading per connection).
--
-- A new name, so code deployed before this migration keeps calling private.webhook_claim.

create function private.webhook_claim_rows(p_event text, p_customer text, p_rule boolean)
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
    select array_agg(bs) into subs
    from private.billing_subscriptions bs where bs.tenant_id = (acct.a).tenant_id;
    return row(seen, on_failure, contact, acct.a, subs);
end;
$$;
revoke all on function private.webhook_claim_rows(text, text, boolean) from public;
