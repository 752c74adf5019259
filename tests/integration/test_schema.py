"""The migrated schema is the design's, column for column (tables are a contract other tools rely on)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bridge.domain.models import DATA_TABLES

# table -> [(column, type, nullable, default)] in column order
COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "options_flow": [
        ("id", "uuid", False, "gen_random_uuid()"),
        ("received_at", "timestamp with time zone", False, "now()"),
        ("event_ts", "timestamp with time zone", False, None),
        ("symbol", "text", False, None),
        ("option_symbol", "text", False, None),
        ("side", "text", False, None),
        ("size", "numeric", False, None),
        ("notional", "numeric", True, None),
        ("strike", "numeric", True, None),
        ("expiration", "date", True, None),
        ("option_type", "text", True, None),
        ("trade_price", "numeric", True, None),
        ("bid", "numeric", True, None),
        ("ask", "numeric", True, None),
        ("venue", "text", True, None),
        ("source", "text", False, "'dev_console'::text"),
        ("raw", "jsonb", True, None),
    ],
    "news_events": [
        ("id", "uuid", False, "gen_random_uuid()"),
        ("received_at", "timestamp with time zone", False, "now()"),
        ("event_ts", "timestamp with time zone", True, None),
        ("source", "text", False, None),
        ("symbol", "text", True, None),
        ("headline", "text", False, None),
        ("body", "text", True, None),
        ("url", "text", True, None),
        ("category", "text", True, None),
        ("sentiment", "text", True, None),
        ("importance", "integer", True, None),
        ("raw", "jsonb", True, None),
    ],
    "broker_accounts": [
        ("id", "uuid", False, "gen_random_uuid()"),
        ("broker", "text", False, None),
        ("external_account_id", "text", False, None),
        ("label", "text", True, None),
        ("created_at", "timestamp with time zone", False, "now()"),
    ],
    "broker_positions": [
        ("id", "uuid", False, "gen_random_uuid()"),
        ("broker_account_id", "uuid", False, None),
        ("symbol", "text", False, None),
        ("qty", "numeric", False, None),
        ("avg_price", "numeric", True, None),
        ("market_value", "numeric", True, None),
        ("updated_at", "timestamp with time zone", False, None),
        ("raw", "jsonb", True, None),
    ],
    "broker_balances": [
        ("id", "uuid", False, "gen_random_uuid()"),
        ("broker_account_id", "uuid", False, None),
        ("cash", "numeric", True, None),
        ("buying_power", "numeric", True, None),
        ("maintenance_margin", "numeric", True, None),
        ("equity", "numeric", True, None),
        ("updated_at", "timestamp with time zone", False, None),
        ("raw", "jsonb", True, None),
    ],
    "bridge_dead_letters": [
        ("id", "uuid", False, None),
        ("feed", "text", False, None),
        ("received_at", "timestamp with time zone", False, None),
        ("reason", "text", False, None),
        ("frame", "text", False, None),
        ("created_at", "timestamp with time zone", False, "now()"),
        ("frame_length", "bigint", True, None),
        ("frame_sha256", "text", True, None),
    ],
}


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("table", list(COLUMNS))
def test_columns_types_nullability_and_defaults(database_url: str, table: str) -> None:
    actual = rows(
        database_url,
        "select column_name, data_type, is_nullable = 'YES', column_default from information_schema.columns"
        " where table_schema = 'public' and table_name = %s order by ordinal_position",
        table,
    )
    assert actual == COLUMNS[table]


def constraints(url: str, kind: str) -> set[tuple[str, str]]:
    return {
        (table, definition)
        for table, definition in rows(
            url,
            "select c.conrelid::regclass::text, pg_get_constraintdef(c.oid) from pg_constraint c"
            " join pg_namespace n on n.oid = c.connamespace where n.nspname = 'public' and c.contype = %s",
            kind,
        )
    }


def test_checks(database_url: str) -> None:
    assert constraints(database_url, "c") == {
        ("options_flow", "CHECK ((side = ANY (ARRAY['buy'::text, 'sell'::text, 'unknown'::text])))"),
        ("options_flow", "CHECK ((option_type = ANY (ARRAY['call'::text, 'put'::text])))"),
        ("bridge_feed_gaps", "CHECK ((backfill_rows >= 0))"),
        ("bridge_feed_gaps", "CHECK (((ended_at IS NULL) OR (ended_at >= started_at)))"),
        ("bridge_feed_gaps", "CHECK ((backfill_status = ANY (ARRAY['pending'::text, 'done'::text, 'partial'::text,"
                             " 'unavailable'::text, 'not_applicable'::text])))"),
    }


def test_unique_constraints_and_primary_keys(database_url: str) -> None:
    assert constraints(database_url, "u") == {
        ("news_events", "UNIQUE (source, event_ts, headline)"),
        ("broker_accounts", "UNIQUE (broker, external_account_id)"),
        ("broker_positions", "UNIQUE (broker_account_id, symbol)"),
        ("broker_balances", "UNIQUE (broker_account_id)"),
    }
    primary = {table for table, definition in constraints(database_url, "p") if definition == "PRIMARY KEY (id)"}
    assert primary >= set(COLUMNS)


def test_foreign_keys(database_url: str) -> None:
    assert constraints(database_url, "f") == {
        ("broker_positions", "FOREIGN KEY (broker_account_id) REFERENCES broker_accounts(id)"),
        ("broker_balances", "FOREIGN KEY (broker_account_id) REFERENCES broker_accounts(id)"),
        ("bridge_position_snapshots", "FOREIGN KEY (broker_account_id) REFERENCES broker_accounts(id)"),
    }


def test_indexes(database_url: str) -> None:
    indexes = dict(rows(database_url, "select indexname, indexdef from pg_indexes where schemaname = 'public'"))
    assert indexes["idx_options_flow_symbol_ts"].endswith("USING btree (symbol, event_ts DESC)")
    assert indexes["idx_news_symbol_ts"].endswith("USING btree (symbol, event_ts DESC NULLS LAST)")
    assert indexes["idx_bridge_dead_letters_feed_received"].endswith("USING btree (feed, received_at)")


def test_row_level_security_is_enabled_on_every_bridge_table(database_url: str) -> None:
    enabled = dict(
        rows(database_url, "select relname::text, relrowsecurity from pg_class where relname = any(%s)", list(COLUMNS))
    )
    assert enabled == dict.fromkeys(COLUMNS, True)
    assert rows(database_url, "select count(*) from pg_policies where schemaname = 'public'") == [(0,)]


def test_constraints_have_the_names_the_docs_and_code_use(database_url: str) -> None:
    named = {
        name
        for (name,) in rows(
            database_url,
            "select c.conname::text from pg_constraint c join pg_namespace n on n.oid = c.connamespace"
            " where n.nspname = 'public' and c.conrelid::regclass::text = any(%s)",
            list(COLUMNS),
        )
    }
    assert named == {
        "options_flow_pkey",
        "options_flow_side_check",
        "options_flow_option_type_check",
        "news_events_pkey",
        "news_events_source_event_ts_headline_key",
        "broker_accounts_pkey",
        "broker_accounts_broker_external_account_id_key",
        "broker_positions_pkey",
        "broker_positions_broker_account_id_fkey",
        "broker_positions_broker_account_id_symbol_key",
        "broker_balances_pkey",
        "broker_balances_broker_account_id_fkey",
        "broker_balances_broker_account_id_key",
        "bridge_dead_letters_pkey",
    }


def test_the_migration_ledger(database_url: str) -> None:
    assert rows(
        database_url,
        "select column_name, data_type, is_nullable = 'YES', column_default from information_schema.columns"
        " where table_schema = 'public' and table_name = 'bridge_schema_migrations' order by ordinal_position",
    ) == [
        ("version", "text", False, None),
        ("checksum", "text", False, None),
        ("applied_at", "timestamp with time zone", False, "now()"),
    ]
    assert ("bridge_schema_migrations", "PRIMARY KEY (version)") in constraints(database_url, "p")


def test_no_table_in_public_is_open_to_supabase_api_roles(database_url: str) -> None:
    """Supabase's API serves every table of public to anon: each needs RLS, the bookkeeping ones too."""
    assert (
        rows(database_url, "select tablename::text from pg_tables where schemaname = 'public' and not rowsecurity")
        == []
    )


def test_every_bookkeeping_table_is_prefixed_bridge(database_url: str) -> None:
    tables = {
        name for (name,) in rows(database_url, "select tablename::text from pg_tables where schemaname = 'public'")
    }
    assert {table for table in tables if not table.startswith("bridge_")} == set(DATA_TABLES)
