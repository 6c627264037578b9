// Package billing is the payment path: the Stripe webhook that turns verified events into the
// tenant's billing projection exactly once and in order, and the checkout endpoint that starts
// a subscription for the caller's tenant.
//
// The webhook verifies the raw body's Stripe-Signature (stripe-go's webhook package, several
// secrets during a rotation, timestamps neither too old nor in the future) before it parses a
// byte, then commits everything an event causes in ONE transaction: the event id in
// private.stripe_events (its primary key is the dedupe key, so a replay changes nothing), the
// tenant resolved from our own records, the projection in private.billing_accounts and the
// follow-up jobs (CRM sync, helpdesk ticket). It never calls Stripe or anything else, so it
// answers fast and Stripe's retries are the only retry it needs.
//
// Ordering: each facet of the projection (customer, email, payment, failure) is a
// last-writer-wins register stamped with the (created, id) of the event that wrote it, and so
// are each subscription's plan and status (an ending status is final); the account shows its
// current subscription (a live one before an ended one, then the newest), so the end of an old
// subscription never ends the current one, and applying the same events in any order gives the
// same rows (see Account.Apply).
//
// Checkout creates (or reuses) the tenant's Stripe customer, tagged with metadata.tenant_id,
// and a subscription Checkout Session whose client_reference_id is the tenant id from the
// verified identity, never from the request body. Its handlers are here; checkout-create's
// wiring (auth, tenant scope, request validation) is in package checkout, so the webhook's
// bootstrap does not link what only checkout uses.
package billing
