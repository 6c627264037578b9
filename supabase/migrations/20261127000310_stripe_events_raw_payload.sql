-- The exact bytes of each Stripe event as it was signed and verified.
--
-- private.stripe_events.payload is jsonb, and jsonb refuses some valid JSON: the escape \u0000
-- and a UTF-16 surrogate escape without its pair. Stripe signs whatever a customer typed into a
-- name, a description or a metadata value, so such an event can arrive; storing it as is would
-- fail on every one of Stripe's retries. The webhook therefore stores payload with those escapes
-- replaced by U+FFFD (what our code reads) and keeps the verified body here, byte for byte, so
-- nothing Stripe sent is lost and a stored event can be applied again from what Stripe signed.
-- Null for events stored before this column (their payload was stored unchanged).
alter table private.stripe_events add column raw_payload bytea;

comment on column private.stripe_events.raw_payload is
    'the event body exactly as Stripe signed it; payload is the same JSON made safe for jsonb';
