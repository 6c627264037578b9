-- The in-app alert's rule becomes "more than 3 failures in the last 10 minutes" over a sliding
-- window (shared/jobs alerter), the rule the CloudWatch alarm reads through the same count.
-- A fixed window opened by the first failure missed 2 + 2 failures either side of its end; the
-- row now keeps the times of the recent failures instead (at most jobs.alertKeep of them, so
-- it stays one small row however long an outage lasts).
alter table private.sync_alerts
    add column recent_failures timestamptz[] not null default '{}',
    drop column window_started_at,
    drop column failures;
