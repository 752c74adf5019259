"""Real PostgreSQL for integration tests.

The server is ``BRIDGE_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL (pgserver) started
once per session in a temporary directory. Each test gets its own database, created from a template
that was migrated once, so tests are isolated and creating one costs a file copy.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import PostgresRepository, open_repository

TEMPLATE = "bridge_test_template"
_names = itertools.count()


def with_database(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of the server's maintenance database (where databases are created and dropped)."""
    given = os.environ.get("BRIDGE_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with (
        tempfile.TemporaryDirectory(prefix="bridge-test-") as home,
        open_embedded_postgres(Path(home)) as url,
    ):
        yield url


@pytest.fixture(scope="session")
def template_url(postgres_server_url: str) -> str:
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(TEMPLATE)))
        connection.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
    url = with_database(postgres_server_url, TEMPLATE)
    migrate(url)
    return url


@pytest.fixture
def database_url(postgres_server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"bridge_test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
        )
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as connection:
            connection.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def repository(database_url: str) -> Iterator[PostgresRepository]:
    with open_repository(database_url, max_size=4) as repository:
        yield repository


def fetch_all(url: str, table: str, order_by: str = "1") -> list[dict[str, Any]]:
    """Every row of ``table`` as dicts (for assertions on exact content)."""
    with psycopg.connect(url) as connection, connection.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(sql.SQL("select * from {} order by " + order_by).format(sql.Identifier(table)))
        return cursor.fetchall()
