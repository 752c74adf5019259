-- Supabase grants ALL on every new table in `public` to its API roles `anon` and `authenticated`. Row Level
-- Security (enabled, no policies) keeps them from reading or writing rows, but three privileges are not
-- row-level: TRUNCATE empties a table past RLS, TRIGGER attaches a trigger to it, REFERENCES lets a table of
-- theirs point a foreign key at it (and so block deletes). None is needed by any client of these tables.
--
-- This revokes them from both roles on the five data tables and on every bridge_* table in `public`, those
-- of the earlier migrations and any other present when it runs. A later migration that adds a bridge table
-- repeats the same statement for it (tests/integration/test_grants.py fails if one does not). Where the roles
-- do not exist (plain PostgreSQL), nothing is revoked and the migration still applies.
--
-- No ALTER DEFAULT PRIVILEGES: those apply to every table later created in the schema by the migrating role,
-- including tables of other applications in a shared Supabase project, which are not the bridge's to change.
do $$
declare
    api_role text;
    bridge_table regclass;
begin
    for api_role in
        select rolname from pg_roles where rolname in ('anon', 'authenticated') order by rolname
    loop
        for bridge_table in
            select c.oid::regclass
            from pg_class c
            join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public'
              and c.relkind in ('r', 'p')
              and (c.relname in ('options_flow', 'news_events', 'broker_accounts', 'broker_positions',
                                 'broker_balances')
                   or c.relname like 'bridge\_%')
            order by c.relname
        loop
            execute format('revoke truncate, trigger, references on table %s from %I', bridge_table, api_role);
        end loop;
    end loop;
end
$$;
