-- Local stand-in for what a Supabase project provides and vanilla PostgreSQL lacks, so the
-- migrations and RLS policies run unchanged in tests and `make dev`. NOT a migration: a real
-- Supabase project already has all of this. Definitions follow Supabase's own.

-- Roles are cluster-wide; several test databases may race to create them.
do $$
begin
    begin create role anon nologin noinherit; exception when duplicate_object or unique_violation then null; end;
    begin create role authenticated nologin noinherit; exception when duplicate_object or unique_violation then null; end;
    begin create role service_role nologin noinherit bypassrls; exception when duplicate_object or unique_violation then null; end;
end
$$;
-- The connecting role (PostgREST's "authenticator") may switch to them, as in Supabase.
grant anon, authenticated, service_role to current_user;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
    id uuid primary key,
    email text,
    raw_app_meta_data jsonb not null default '{}',
    raw_user_meta_data jsonb not null default '{}',
    is_anonymous boolean not null default false,
    created_at timestamptz not null default now()
);

create or replace function auth.uid() returns uuid language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.email() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

create or replace function auth.jwt() returns jsonb language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

grant usage on schema public to anon, authenticated, service_role;
-- Supabase grants every new table in public to the API roles by default; migrations must
-- revoke what they do not mean to expose, and the tests prove they do.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
