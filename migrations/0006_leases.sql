-- Leases: which replica runs which feed, so that several replicas never read one stream at once.
--
-- One row per feed (`name` = 'feed:<feed>'), taken and renewed by single statements that compare
-- `expires_at` with the database's own clock (`now()`), never a replica's: replicas whose clocks disagree
-- still agree on who holds a lease. `fencing` grows by one at every new tenure (every acquisition, so every
-- change of holder); renewals and releases name the tenure they mean, so a process that lost its lease
-- cannot renew or release a later one. Rows named 'instance:<id>' are the replicas' heartbeats (same
-- columns, `fencing` unused), from which each replica counts the live ones to spread the feeds.
-- No session state and no advisory locks: all of it works through a transaction pooler.
create table if not exists public.bridge_leases (
    name text primary key,
    holder text not null,
    expires_at timestamptz not null,
    fencing bigint not null default 0,
    acquired_at timestamptz not null default now(),
    renewed_at timestamptz not null default now()
);

comment on table public.bridge_leases is
    'Stream Bridge: feed leases (feed:<name>) and replica heartbeats (instance:<id>); times are the database''s';

alter table public.bridge_leases enable row level security;

-- As 0004_revoke_public_grants.sql does for the earlier tables: Supabase's API roles get no TRUNCATE,
-- TRIGGER or REFERENCES on this table either; where the roles do not exist nothing is revoked.
do $$
declare
    api_role text;
begin
    for api_role in
        select rolname from pg_roles where rolname in ('anon', 'authenticated') order by rolname
    loop
        execute format('revoke truncate, trigger, references on table public.bridge_leases from %I', api_role);
    end loop;
end
$$;
