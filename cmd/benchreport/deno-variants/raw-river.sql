-- deno+raw-river: deno+raw, and the CRM follow-up is a River job instead of a row in the
-- reference's own jobs table: River's tables as River's migrations create them (the project's
-- first River migration, unchanged, before the project's own changes to them), and River's unique
-- insert (raw-river.patch): a job a worker can run, retry and dead-letter, one per customer
-- while it waits.
\ir raw.sql
create schema private;
\ir ../../../supabase/migrations/20261127000200_river.sql
