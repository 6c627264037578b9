-- The billing queue (billing-refresh: reads of Stripe subscriptions after same-second ties)
-- alerts like the push queues when its jobs fail or dead-letter: its failures are counted in
-- private.sync_alerts under integration 'billing'. Its jobs keep no sync status (the portal's
-- integrations are the pushes), so private.sync_status keeps its list.
alter table private.sync_alerts drop constraint sync_alerts_integration_check;
alter table private.sync_alerts add constraint sync_alerts_integration_check
    check (integration in ('crm', 'helpdesk', 'billing'));
