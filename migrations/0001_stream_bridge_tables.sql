-- Stream Bridge tables: the five tables of the design, plus the bridge's dead-letter table.
-- Plain SQL (no psql meta-commands) so that the Supabase CLI can apply it as well as `bridge migrate`.

create table if not exists public.options_flow (
    id            uuid        primary key default gen_random_uuid(),
    received_at   timestamptz not null default now(),
    event_ts      timestamptz not null,
    symbol        text        not null,
    option_symbol text        not null,
    side          text        not null constraint options_flow_side_check check (side in ('buy', 'sell', 'unknown')),
    size          numeric     not null,
    notional      numeric,
    strike        numeric,
    expiration    date,
    option_type   text        constraint options_flow_option_type_check check (option_type in ('call', 'put')),
    trade_price   numeric,
    bid           numeric,
    ask           numeric,
    venue         text,
    source        text        not null default 'dev_console',
    raw           jsonb
);
create index if not exists idx_options_flow_symbol_ts on public.options_flow (symbol, event_ts desc);

create table if not exists public.news_events (
    id          uuid        primary key default gen_random_uuid(),
    received_at timestamptz not null default now(),
    event_ts    timestamptz,
    source      text        not null,
    symbol      text,
    headline    text        not null,
    body        text,
    url         text,
    category    text,
    sentiment   text,
    importance  integer,
    raw         jsonb,
    constraint news_events_source_event_ts_headline_key unique (source, event_ts, headline)
);
create index if not exists idx_news_symbol_ts on public.news_events (symbol, event_ts desc nulls last);

create table if not exists public.broker_accounts (
    id                  uuid        primary key default gen_random_uuid(),
    broker              text        not null,
    external_account_id text        not null,
    label               text,
    created_at          timestamptz not null default now(),
    constraint broker_accounts_broker_external_account_id_key unique (broker, external_account_id)
);

create table if not exists public.broker_positions (
    id                uuid        primary key default gen_random_uuid(),
    broker_account_id uuid        not null
        constraint broker_positions_broker_account_id_fkey references public.broker_accounts (id),
    symbol            text        not null,
    qty               numeric     not null,
    avg_price         numeric,
    market_value      numeric,
    updated_at        timestamptz not null,
    raw               jsonb,
    constraint broker_positions_broker_account_id_symbol_key unique (broker_account_id, symbol)
);

create table if not exists public.broker_balances (
    id                 uuid        primary key default gen_random_uuid(),
    broker_account_id  uuid        not null
        constraint broker_balances_broker_account_id_fkey references public.broker_accounts (id),
    cash               numeric,
    buying_power       numeric,
    maintenance_margin numeric,
    equity             numeric,
    updated_at         timestamptz not null,
    raw                jsonb,
    constraint broker_balances_broker_account_id_key unique (broker_account_id)
);

-- Every frame the bridge could not use, with why; nothing is dropped silently.
create table if not exists public.bridge_dead_letters (
    id          uuid        primary key,
    feed        text        not null,
    received_at timestamptz not null,
    reason      text        not null,
    frame       text        not null,
    created_at  timestamptz not null default now()
);
create index if not exists idx_bridge_dead_letters_feed_received
    on public.bridge_dead_letters (feed, received_at);

-- Row Level Security without policies: Supabase's anon and authenticated roles read nothing;
-- the service role and the table owner (the bridge) bypass RLS.
alter table public.options_flow        enable row level security;
alter table public.news_events         enable row level security;
alter table public.broker_accounts     enable row level security;
alter table public.broker_positions    enable row level security;
alter table public.broker_balances     enable row level security;
alter table public.bridge_dead_letters enable row level security;
