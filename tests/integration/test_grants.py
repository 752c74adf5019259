"""Supabase's API roles cannot empty a bridge table: TRUNCATE, TRIGGER and REFERENCES are revoked.

Supabase grants ALL on every new table in ``public`` to ``anon`` and ``authenticated``; RLS stops rows, but
not TRUNCATE. Here the roles are created with those grants, the migrations applied, and TRUNCATE tried as
each role on every bridge table, including tables that later migrations add. Roles are cluster-wide, so the
test creates them only when the server has none and drops them afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import psycopg
import pytest
from psycopg import sql

from bridge.adapters.postgres.migrations import default_migrations_dir, migrate
from tests.integration.conftest import with_database

API_ROLES: Final = ("anon", "authenticated")
REVOKED: Final = ("TRUNCATE", "TRIGGER", "REFERENCES")
GRANTS_MIGRATION: Final = "0004_revoke_public_grants"
DATA_TABLES: Final = ("options_flow", "news_events", "broker_accounts", "broker_positions", "broker_balances")
_names = itertools.count()


def existing_api_roles(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("select rolname from pg_roles where rolname = any(%s) order by 1", [list(API_ROLES)])
        return [name for (name,) in rows]


def bridge_tables(url: str) -> list[str]:
    """The five data tables and every ``bridge_*`` table in ``public``, whichever migration made it."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            r"""select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname = 'public' and c.relkind in ('r', 'p')
                  and (c.relname = any(%s) or c.relname like 'bridge\_%%')
                order by 1""",
            [list(DATA_TABLES)],
        )
        return [name for (name,) in rows]


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    name = f"bridge_test_grants_{os.getpid()}_{next(_names)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as connection:
            connection.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def api_roles(postgres_server_url: str) -> Iterator[None]:
    """``anon`` and ``authenticated`` as Supabase has them (no login), dropped afterwards if this made them."""
    made = [role for role in API_ROLES if role not in existing_api_roles(postgres_server_url)]
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        for role in made:
            connection.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
    try:
        yield
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as connection:
            for role in made:
                connection.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


@pytest.fixture
def supabase_like_database(api_roles: None, empty_database: Iterator[str]) -> Iterator[str]:
    """An empty database whose new tables in ``public`` get ``GRANT ALL`` to the API roles, as on Supabase."""
    with psycopg.connect(empty_database, autocommit=True) as connection:
        connection.execute("grant usage on schema public to anon, authenticated")
        connection.execute("alter default privileges in schema public grant all on tables to anon, authenticated")
    yield empty_database  # the database (dropped first by empty_database) holds the roles' default privileges


def privileges(url: str, role: str, table: str) -> set[str]:
    query = "select has_table_privilege(%s, %s, %s)"
    with psycopg.connect(url) as connection:
        return {
            privilege
            for privilege in (*REVOKED, "SELECT", "INSERT")
            if connection.execute(query, [role, f"public.{table}", privilege]).fetchone() == (True,)
        }


def test_the_api_roles_cannot_truncate_trigger_or_reference_a_bridge_table(
    supabase_like_database: str, tmp_path: Path
) -> None:
    url = supabase_like_database
    before = Path(shutil.copytree(default_migrations_dir(), tmp_path / "migrations"))
    (before / f"{GRANTS_MIGRATION}.sql").unlink()
    migrate(url, before)
    # the setting is Supabase's: without the revocation, anon may empty the table past RLS
    assert privileges(url, "anon", "options_flow") == {*REVOKED, "SELECT", "INSERT"}

    assert GRANTS_MIGRATION in migrate(url)
    tables = bridge_tables(url)
    assert set(DATA_TABLES) | {"bridge_dead_letters", "bridge_schema_migrations"} <= set(tables)
    for role in API_ROLES:
        for table in tables:
            # every other privilege stays (RLS, not grants, keeps rows from the API roles)
            assert privileges(url, role, table) == {"SELECT", "INSERT"}, (role, table)

    with psycopg.connect(url) as connection:
        connection.execute("insert into public.broker_accounts (broker, external_account_id) values ('t', 'A1')")
        connection.commit()
        for role in API_ROLES:
            for table in tables:
                connection.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    connection.execute(sql.SQL("truncate table public.{} cascade").format(sql.Identifier(table)))
                connection.rollback()
        assert connection.execute("select count(*) from public.broker_accounts").fetchone() == (1,)


def test_the_migrations_apply_where_the_api_roles_do_not_exist(postgres_server_url: str, empty_database: str) -> None:
    if existing_api_roles(postgres_server_url):
        pytest.skip("this server has Supabase's anon/authenticated roles: the case without them cannot be shown here")
    applied = migrate(empty_database)
    assert applied == sorted(path.stem for path in default_migrations_dir().glob("*.sql"))
    assert GRANTS_MIGRATION in applied
    assert migrate(empty_database) == []
