-- The job queue's own tables and the lock-down of River's tables (shared/jobs).
--
-- River's tables live in schema private (generated file 20261127000200_river.sql), which the
-- Data API does not expose; RLS with no policy and revoked grants make sure that even a
-- misconfigured exposure gives anon and authenticated users nothing.
do $$
declare t text;
begin
    for t in select tablename from pg_tables where schemaname = 'private' and tablename like 'river\_%' loop
        execute format('alter table private.%I enable row level security', t);
        execute format('revoke all on private.%I from anon, authenticated', t);
    end loop;
end;
$$;

-- One row per integration: failures counted in the current alert window and when the last
-- alert went out. Workers in separate Lambda containers claim the alert here (row lock), so an
-- outage pages once per window, not once per container.
create table private.sync_alerts (
    integration text primary key check (integration in ('crm', 'helpdesk')),
    window_started_at timestamptz not null,
    failures integer not null default 0,
    last_sent_at timestamptz,
    last_message text not null default ''
);
alter table private.sync_alerts enable row level security;
revoke all on private.sync_alerts from anon, authenticated;

-- Dead-letter listings filter finalized jobs by queue and tenant.
create index river_job_dead_letters_idx on private.river_job (queue, finalized_at)
    where state in ('discarded', 'cancelled');
