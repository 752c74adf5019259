-- The newest full positions snapshot applied per broker account (the bridge's bookkeeping).
-- A snapshot is authoritative up to its time: a position update older than it, or an older snapshot
-- arriving late, must not bring back a position the snapshot no longer listed.
create table if not exists public.bridge_position_snapshots (
    broker_account_id uuid        primary key
        constraint bridge_position_snapshots_account_fkey references public.broker_accounts (id),
    as_of             timestamptz not null
);
alter table public.bridge_position_snapshots enable row level security;
