-- Whether applying a Stripe event changed what the CRM shows, and so queued a CRM push in the
-- same transaction. The webhook's path sets it (true/false) when it applies an event; null means
-- "not recorded" (events stored before this column). Reconcile needs it to tell "the push for
-- this change is missing" from "this event changed nothing the CRM shows" (an invoice.paid of
-- an already active subscription): without it, every renewal would look like a missing push.
alter table private.stripe_events add column crm_sync boolean;
