-- How private.webhook_rejections stays small (this supersedes the note in
-- 20261127000500_webhook_rejections.sql, which named a prune function that no longer exists):
-- every insert by health.RecordRejectedDelivery also deletes, in the same statement, a bounded
-- batch of rows older than health.RejectionRetention (30 days). The table only grows when
-- deliveries are refused, which is exactly when it is pruned, so no scheduled job is needed.
comment on table private.webhook_rejections is
    'Stripe deliveries the webhook refused (no payload), for delivery health. Pruned on insert: '
    'health.RecordRejectedDelivery deletes up to 100 rows older than 30 days per new row.';
