"""Real PostgreSQL for integration tests.

The server is ``BRIDGE_TEST_DATABASE_URL`` when set (a role that may create databases), else an
embedded PostgreSQL (pgserver) started once per session in a temporary directory. Each test gets its
own database, created from a template that was migrated once, so tests are isolated and no test
pays for the migrations.

``CREATE DATABASE`` spends most of its ~150 ms waiting, not working, so a few databases are created
ahead on worker threads while tests run, and used ones are dropped in the background.

Fixtures:

* ``postgres_server_url`` (session): the server's maintenance database, to create databases in.
* ``template_url`` (session): the migrated template. Do not connect to it: a connection to a
  template makes ``CREATE DATABASE … TEMPLATE`` fail.
* ``database_url``: a fresh migrated database for this test, dropped afterwards.
* ``repository``: a ``PostgresRepository`` (COPY path, small pool) on ``database_url``.

Helpers: ``with_database(url, name)`` (the same server, another database) and
``fetch_all(url, table)`` (every row as a dict, for exact assertions).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import PostgresRepository, open_repository

TEMPLATE: Final = f"bridge_test_template_{os.getpid()}"
"""Per process: sessions sharing one server (pytest-xdist, two developers) do not drop each other's."""
AHEAD: Final = 3
"""Databases kept ready (or being created) beyond the one a test is using."""


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database replaced by ``dbname`` (URL or key=value in, key=value out)."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _admin(url: str, statement: sql.Composable) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)


class TestDatabases:
    """Copies of the template, created ahead on worker threads and dropped in the background."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self._names = (f"bridge_test_{os.getpid()}_{n}" for n in itertools.count())
        self._lock = threading.Lock()
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=AHEAD + 1, thread_name_prefix="bridge-test-db")

    def _create(self, name: str) -> str:
        _admin(
            self.server_url,
            sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(self.template)),
        )
        return name

    def _drop(self, name: str) -> None:
        _admin(self.server_url, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def take(self) -> str:
        """The name of a new database copied from the template; give it back when done."""
        with self._lock:
            while len(self._ready) < AHEAD + 1:
                self._ready.append(self._executor.submit(self._create, next(self._names)))
            taken = self._ready.popleft()
            self._ready.append(self._executor.submit(self._create, next(self._names)))
        return taken.result()

    def give_back(self, name: str) -> None:
        with self._lock:
            self._drops.append(self._executor.submit(self._drop, name))

    def close(self) -> None:
        """Drop every database this made, used or not; wait for all of it."""
        with self._lock:
            ready, self._ready = list(self._ready), deque()
        for future in ready:
            with contextlib.suppress(psycopg.Error):  # a creation that failed left nothing to drop
                self._drop(future.result())
        for drop in self._drops:
            drop.result()
        self._executor.shutdown(wait=True)


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
def template_url(postgres_server_url: str) -> Iterator[str]:
    """A database migrated once per session; tests get copies of it (``database_url``)."""
    template = sql.Identifier(TEMPLATE)
    _admin(postgres_server_url, sql.SQL("drop database if exists {} with (force)").format(template))
    _admin(postgres_server_url, sql.SQL("create database {}").format(template))
    url = with_database(postgres_server_url, TEMPLATE)
    try:
        migrate(url)
        yield url
    finally:
        _admin(postgres_server_url, sql.SQL("drop database if exists {} with (force)").format(template))


@pytest.fixture(scope="session")
def _test_databases(postgres_server_url: str, template_url: str) -> Iterator[TestDatabases]:
    databases = TestDatabases(postgres_server_url, TEMPLATE)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def database_url(postgres_server_url: str, _test_databases: TestDatabases) -> Iterator[str]:
    """A fresh, migrated database for this test only, dropped afterwards (even if connections remain)."""
    name = _test_databases.take()
    try:
        yield with_database(postgres_server_url, name)
    finally:
        _test_databases.give_back(name)


@pytest.fixture
def repository(database_url: str) -> Iterator[PostgresRepository]:
    """The repository the application uses (COPY path, a small pool) on this test's database."""
    with open_repository(database_url, max_size=4) as repository:
        yield repository


def fetch_all(url: str, table: str, order_by: str = "1") -> list[dict[str, Any]]:
    """Every row of ``table`` as dicts, ordered by ``order_by`` (SQL), for assertions on exact content."""
    with psycopg.connect(url) as connection, connection.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(sql.SQL("select * from {} order by " + order_by).format(sql.Identifier(table)))
        return cursor.fetchall()
