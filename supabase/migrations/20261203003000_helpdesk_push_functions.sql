-- The helpdesk push's statements and the worker's sync-status record as PL/pgSQL functions
-- (issue 13: ticket creation at 300/s on make dev, where the in-process pusher shares the two
-- cores with the requests).
--
-- pgx sends every statement unnamed (server-side prepared statements are out behind
-- Supavisor's transaction mode), so Postgres planned each of the pusher's statements on every
-- push. Measured with pg_stat_statements (track = all, track_planning) at 300 tickets/s: the
-- push's ticket read (a join and a json_agg subquery) spent 0.42 ms planning for 0.13 ms of
-- execution, and the two updates of the ticket, the sync-status upsert and the two
-- set_config calls about 0.35 ms more, per ticket. A PL/pgSQL function keeps its statements'
-- plans per connection, and a function that asks for an unflushed commit (set_config with
-- is_local inside, as private.idempotency_claim does) is one statement instead of three
-- (begin and commit were in the same round trip; the setting was its own statement).

-- The ticket a push sends, with its tenant and its attachments (no row: the ticket is gone).
create or replace function private.helpdesk_ticket(p_ticket uuid, p_tenant uuid,
    out subject text, out body text, out category text, out priority text, out source text,
    out requester_email text, out requester_name text, out tenant_name text, out contact_email text,
    out helpdesk_ticket_id bigint, out helpdesk_attempted_at timestamptz, out attachments json)
returns setof record
language plpgsql stable set search_path = ''
as $$
begin
    return query
    select t.subject, t.body, t.category, t.priority, t.source, t.requester_email, t.requester_name,
           n.name, n.contact_email, t.helpdesk_ticket_id, t.helpdesk_attempted_at,
           coalesce((select json_agg(json_build_object('name', a.name, 'content_type', a.content_type,
                                                       'object_path', a.object_path, 'size', a.size_bytes)
                                     order by a.created_at, a.id)
                     from public.ticket_attachments a
                     where a.ticket_id = t.id and a.tenant_id = t.tenant_id), '[]')
    from public.tickets t join public.tenants n on n.id = t.tenant_id
    where t.id = p_ticket and t.tenant_id = p_tenant;
end;
$$;

-- Stamps the ticket before a create is sent: a later attempt looks the ticket up in Zendesk
-- before creating it. Its commit does not wait for the WAL flush. Sampling pg_stat_activity
-- every 10 ms at 300 tickets/s, the pusher's connections spent about as many samples waiting
-- on WAL (LWLock:WALWrite, IO:WALSync) in this commit as on CPU, and the requests' commits
-- queued on the same flushes. Within one job, River's fetch of the next attempt says the
-- same (it appends to attempted_by and commits, flushed, before the worker runs;
-- shared/helpdesk.Attempt.Repeat); and a later job of the same ticket (a requeued dead letter)
-- can be inserted only once this job is finalized, by a synchronous commit whose flush
-- carries the stamp (WAL is flushed in order).
create or replace function private.helpdesk_mark_attempted(p_ticket uuid) returns void
language plpgsql set search_path = ''
as $$
begin
    perform set_config('synchronous_commit', 'off', true);
    update public.tickets set helpdesk_attempted_at = coalesce(helpdesk_attempted_at, now())
    where id = p_ticket;
end;
$$;

-- Records the Zendesk ticket. Its commit does not wait for the WAL flush: the job's
-- completion, which River commits afterwards, waits for it and carries this record with it
-- (WAL is flushed in order); a push whose record a crash lost is not completed either, so it
-- runs again and adopts the Zendesk ticket by external_id.
create or replace function private.helpdesk_mark_synced(p_ticket uuid, p_helpdesk_id bigint) returns void
language plpgsql set search_path = ''
as $$
begin
    perform set_config('synchronous_commit', 'off', true);
    update public.tickets
    set status = 'synced', helpdesk_ticket_id = p_helpdesk_id, synced_at = now(), updated_at = now()
    where id = p_ticket;
end;
$$;

-- The worker's record of one attempt's outcome in private.sync_status (shared/jobs): synced
-- stamps last_success_at; the times only move forward. Its commit does not wait for the WAL
-- flush: River commits the job's new state after it, synchronously, and that flush carries
-- this record too; a crash that loses it loses the job's state as well, so the attempt runs
-- and is recorded again.
create or replace function private.sync_status_record(p_integration text, p_subject text, p_tenant uuid,
    p_state text, p_error text, p_attempts integer, p_at timestamptz) returns void
language plpgsql set search_path = ''
as $$
begin
    perform set_config('synchronous_commit', 'off', true);
    insert into private.sync_status
        (integration, subject, tenant_id, state, last_success_at, last_attempt_at, last_error, attempts, updated_at)
    values (p_integration, p_subject, p_tenant, p_state, case when p_state = 'synced' then p_at end, p_at,
            nullif(p_error, ''), p_attempts, p_at)
    on conflict (integration, subject) do update set
        state = excluded.state,
        last_success_at = greatest(excluded.last_success_at, private.sync_status.last_success_at),
        last_attempt_at = greatest(excluded.last_attempt_at, private.sync_status.last_attempt_at),
        last_error = excluded.last_error,
        attempts = excluded.attempts,
        updated_at = excluded.updated_at;
end;
$$;

revoke all on function private.helpdesk_ticket(uuid, uuid), private.helpdesk_mark_attempted(uuid),
    private.helpdesk_mark_synced(uuid, bigint),
    private.sync_status_record(text, text, uuid, text, text, integer, timestamptz)
from public;
