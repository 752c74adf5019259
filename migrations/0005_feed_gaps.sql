-- The gap ledger: one row per interval in which a feed was not receiving (a disconnect, a stall, a full
-- journal, a shutdown and the restart after it, a lease handed over), and what backfill did about it.
create table if not exists public.bridge_feed_gaps (
    id              uuid        primary key,
    feed            text        not null,
    started_at      timestamptz not null,
    ended_at        timestamptz,
    reason          text        not null,
    instance_id     text,
    backfill_status text        check (backfill_status in ('pending', 'done', 'partial', 'unavailable', 'not_applicable')),
    backfill_rows   integer     check (backfill_rows >= 0),
    backfill_detail text,
    created_at      timestamptz not null default now(),
    check (ended_at is null or ended_at >= started_at)
);
create index if not exists idx_bridge_feed_gaps_feed_started on public.bridge_feed_gaps (feed, started_at);
alter table public.bridge_feed_gaps enable row level security;

do $$
declare
    role_name text;
begin
    foreach role_name in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = role_name) then
            execute format('revoke truncate, trigger, references on public.bridge_feed_gaps from %I', role_name);
        end if;
    end loop;
end
$$;
