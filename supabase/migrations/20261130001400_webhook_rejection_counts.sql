-- Refused Stripe deliveries as bounded counters (shared/health, RecordRejectedDelivery).
--
-- private.webhook_rejections kept one row per refused delivery: an unauthenticated caller at the
-- API's throttle wrote millions of rows a day. Health only needs how many were refused and why,
-- so a refusal now adds one to the row of its minute and reason (an upsert): a storm of any size
-- is at most one row per minute and reason. The reason is free text, checked for shape only, so
-- a new kind of refusal needs no migration.
create table private.webhook_rejection_counts (
    -- The minute the refusals arrived in (date_trunc('minute', now())).
    minute timestamptz not null check (minute = date_trunc('minute', minute)),
    -- Why the deliveries were turned away: signature, payload, error, or a newer reason.
    reason text not null check (reason ~ '^[a-z][a-z0-9_]{0,31}$'),
    refused bigint not null default 0 check (refused >= 0),
    -- The HTTP status and verified event id (when there was one) of the minute's last refusal.
    last_status integer not null check (last_status between 400 and 599),
    last_event_id text check (last_event_id is null or char_length(last_event_id) <= 255),
    primary key (minute, reason)
);

alter table private.webhook_rejection_counts enable row level security;
revoke all on table private.webhook_rejection_counts from public, anon, authenticated;

comment on table private.webhook_rejection_counts is
    'Stripe deliveries the webhook refused, counted per minute and reason, for delivery health. '
    'Pruned on insert: health.RecordRejectedDelivery deletes up to 100 minutes older than 30 days.';

insert into private.webhook_rejection_counts (minute, reason, refused, last_status, last_event_id)
select date_trunc('minute', received_at), reason, count(*),
       (array_agg(status order by id desc))[1], (array_agg(event_id order by id desc))[1]
from private.webhook_rejections
group by 1, 2;

drop table private.webhook_rejections;
