-- Stripe deliveries the webhook turned away (bad signature, unreadable payload, an error before
-- the event was stored). The inbox (private.stripe_events) only holds accepted events, so without
-- this a failing webhook would look like a quiet one in `reconcile health`. One small row per
-- rejection, no payload (an unverified body is not ours to keep). It stays small without a
-- scheduled job: every insert by health.RecordRejectedDelivery also deletes, in the same
-- statement, a bounded batch of rows older than health.RejectionRetention (30 days), and the
-- table only grows when deliveries are refused, which is exactly when it is pruned.
create table private.webhook_rejections (
    id bigint generated always as identity primary key,
    received_at timestamptz not null default now(),
    -- signature | payload | error: why the delivery was turned away.
    reason text not null check (reason in ('signature', 'payload', 'error')),
    -- The HTTP status Stripe was answered with (400 signature/payload, 5xx error).
    status integer not null check (status between 400 and 599),
    -- The event id when the payload was verified and readable (reason 'error').
    event_id text check (event_id is null or char_length(event_id) <= 255)
);
create index webhook_rejections_received_idx on private.webhook_rejections (received_at);

alter table private.webhook_rejections enable row level security;
revoke all on table private.webhook_rejections from public, anon, authenticated;

comment on table private.webhook_rejections is
    'Stripe deliveries the webhook refused (no payload), for delivery health. Pruned on insert: '
    'health.RecordRejectedDelivery deletes up to 100 rows older than 30 days per new row.';
