// Package jobs is the project's job queue: River (github.com/riverqueue/river) on the same
// Postgres as the business data, with its tables in schema private.
//
// Follow-up work (push a tenant to the CRM, a ticket to the helpdesk) is inserted by the
// Inserter inside the very transaction that changed the data, so a committed change always has
// its job and a rolled-back one never does (transactional outbox). Jobs are unique per (kind,
// subject, source event), so a repeated webhook or a reconcile run cannot queue the same push
// twice. Scheduled functions work a queue for a time budget with Run; every outcome is recorded
// in private.sync_status, logged, counted as a metric and, past a threshold, alerted on.
// Discarded and cancelled jobs are the dead-letter list (DeadLetters, Requeue).
//
// Workers only return errors: Permanent(err) for what no retry can fix (cancel now, dead
// letter), RetryAfter(d, err) when the provider said when to come back (snooze), anything
// else is retried with the integration's backoff.
package jobs
