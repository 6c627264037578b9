// Package reconcile is the one safe way to repair what went wrong between Stripe, our database
// and the integrations: for one tenant or one date range (never everything at once), it finds
// stored Stripe events that were never applied or are unmatched and now match a tenant,
// billing changes whose CRM push is missing or dead-lettered, and tickets that never reached
// the helpdesk and have no live job — and, with Apply, repairs only those: events go through
// the webhook's own application path, pushes through the queue's unique inserts. It never
// deletes and never re-runs anything that is already fine, so a second run finds nothing to
// do and a run racing live webhooks adds no second effect.
//
// With FromStripe it also lists the range's events from Stripe's API and ingests the ones we
// never received, again through the webhook's path.
//
// Dry run is the default: the report says what would be done. The CLI (cmd/reconcile) and the
// Lambda (functions/reconcile, ReconcileFunction) are thin shells around Reconciler.Run.
package reconcile
