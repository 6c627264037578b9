-- The webhook's claim reads the tenant's subscriptions only for an event that names a
-- subscription (issue 12). make bench-pg (the backends' instructions per delivery of
-- BenchmarkWebhookDelivery, an invoice.paid each): 953,341 before, 922,480 after (-3.2 %);
-- with prepared statements 748,830 before, 718,133 after (-4.1 %).
--
-- An invoice event (invoice.paid, invoice.payment_failed: most deliveries, and all of a
-- month-start renewal burst) writes the payment or failure facet and never a subscription's
-- registers, yet the claim aggregated the tenant's subscriptions for it: an aggregate and a
-- (bitmap) index scan started, run and ended on every delivery. The one thing such a change
-- took from them was the row's source, the newest stamp of any facet or subscription; the row
-- keeps that in source_event_created and source_event_id, which the claim's whole-row read
-- returns anyway, and shared/billing now counts the saved source in it (Account.SavedSource).
-- p_subscriptions says whether to read them; shared/billing passes whether the event's change
-- names a subscription (needsSubscriptions), and reads them itself (lockAccount) in the one
-- case it would need them unread.
--
-- The three-argument function of 20261205100000 goes: nothing deployed calls it (it came with
-- the code that now calls this one).

drop function private.webhook_claim_rows(text, text, boolean);

create function private.webhook_claim_rows(p_event text, p_customer text, p_rule boolean, p_subscriptions boolean)
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
revoke all on function private.webhook_claim_rows(text, text, boolean, boolean) from public;
