-- deno+raw: the reference's inbox keeps each event's body as Stripe signed it, as the project's
-- private.stripe_events.raw_payload does, with the project's column settings (LZ4, compressed in
-- the row: 20261201001200 and 20261202001200). The body goes as text, the cheapest form for
-- the function to send and for Postgres to take in.
alter table stripe_events add column raw_payload text;
alter table stripe_events
    alter column raw_payload set compression lz4,
    alter column raw_payload set storage main,
    alter column id set storage main,
    alter column type set storage main;
