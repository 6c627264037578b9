-- private.sync_status's two CHECK constraints become the checks of domains (issue 12), as
-- river_job's did in 20261204100100_river_job_checks_cached.sql and for the same reason: a
-- table's checks are read back from their node strings and planned for every statement that
-- writes a row, a domain's once per backend. Every queued push upserts its subject's sync
-- status, and every attempt of it updates the row again.
--
-- Same rules, same constraint names, same SQLSTATE 23514 on a violation; the columns change
-- type without a rewrite (a domain without constraints is binary-compatible with text), then
-- the constraints are added to the domains, which checks the existing rows. Clients see text.
create domain private.sync_integration as text;
create domain private.sync_state as text;

-- sync_summary_update's WHEN names the columns, which a type change refuses: dropped and
-- created again as it was, in this transaction (its lock keeps every write out meanwhile).
drop trigger sync_summary_update on private.sync_status;

alter table private.sync_status
    alter column integration type private.sync_integration,
    alter column state type private.sync_state;

alter domain private.sync_integration
    add constraint sync_status_integration_check check (value in ('crm', 'helpdesk'));
alter domain private.sync_state
    add constraint sync_status_state_check check (value in ('pending', 'synced', 'retrying', 'failed'));

alter table private.sync_status
    drop constraint sync_status_integration_check,
    drop constraint sync_status_state_check;

create trigger sync_summary_update after update on private.sync_status
    for each row when (old.state is distinct from new.state
                       or old.last_success_at is distinct from new.last_success_at
                       or old.last_attempt_at is distinct from new.last_attempt_at
                       or old.tenant_id is distinct from new.tenant_id
                       or old.integration is distinct from new.integration)
    execute function private.sync_summary_track();
