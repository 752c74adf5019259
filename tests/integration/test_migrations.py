"""`bridge migrate`'s runner against a real server: order, records, edits, concurrency, errors."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge.adapters.postgres.migrations import (
    DatabaseUnreachable,
    MigrationError,
    default_migrations_dir,
    migrate,
    pending,
)
from tests.integration.conftest import with_database

SHIPPED = sorted(path.stem for path in default_migrations_dir().glob("*.sql"))
_empty_names = itertools.count()


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    """A database with nothing in it (not even the ledger), dropped afterwards."""
    name = f"bridge_test_empty_{os.getpid()}_{next(_empty_names)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(f'drop database if exists "{name}" with (force)')
        connection.execute(f'create database "{name}"')
    try:
        yield with_database(postgres_server_url, name)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as connection:
            connection.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_migrations_dir(), tmp_path / "migrations"))


def test_applies_in_order_records_and_is_a_no_op_the_second_time(empty_database: str, migrations_copy: Path) -> None:
    (migrations_copy / "0090_extra.sql").write_text("create table public.bridge_extra (id int);")
    expected = [*SHIPPED, "0090_extra"]
    assert pending(empty_database, migrations_copy) == expected
    assert migrate(empty_database, migrations_copy) == expected
    assert migrate(empty_database, migrations_copy) == []
    with psycopg.connect(empty_database) as connection:
        recorded = connection.execute("select version from bridge_schema_migrations order by version").fetchall()
    assert recorded == [(version,) for version in expected]


def test_refuses_to_run_when_an_applied_file_was_edited(empty_database: str, migrations_copy: Path) -> None:
    migrate(empty_database, migrations_copy)
    first = migrations_copy / "0001_stream_bridge_tables.sql"
    first.write_text(first.read_text() + "\n-- edited\n")
    (migrations_copy / "0091_more.sql").write_text("create table public.bridge_more (id int);")
    with pytest.raises(MigrationError, match=r"0001_stream_bridge_tables\.sql was edited after it was applied"):
        migrate(empty_database, migrations_copy)
    with psycopg.connect(empty_database) as connection:
        assert connection.execute("select to_regclass('public.bridge_more')").fetchone() == (None,)


def test_a_failing_migration_is_rolled_back_whole(empty_database: str, migrations_copy: Path) -> None:
    (migrations_copy / "0092_broken.sql").write_text("create table public.bridge_half (id int); select 1/0;")
    with pytest.raises(MigrationError, match=r"0092_broken\.sql failed and was rolled back: division by zero"):
        migrate(empty_database, migrations_copy)
    assert pending(empty_database, migrations_copy) == ["0092_broken"]
    with psycopg.connect(empty_database) as connection:
        assert connection.execute("select to_regclass('public.bridge_half')").fetchone() == (None,)


def test_concurrent_runs_apply_each_migration_once(empty_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_database))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 4
    # each file once, by whichever run took the lock first for it (one run need not apply them all)
    assert sorted(version for applied in results for version in applied) == sorted(SHIPPED)


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    with pytest.raises(DatabaseUnreachable) as caught:
        migrate("postgresql://bridge:Sup3rSecret@127.0.0.1:1/postgres")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot reach the database at postgresql://bridge:***@127.0.0.1:1/postgres:")
    assert "Sup3rSecret" not in message


def test_the_default_directory_is_the_repository_copy_in_an_editable_install() -> None:
    assert (default_migrations_dir() / "0001_stream_bridge_tables.sql").is_file()
    assert SHIPPED[0] == "0001_stream_bridge_tables"


def test_a_file_not_named_like_a_migration_is_refused_before_anything_runs(
    empty_database: str, migrations_copy: Path
) -> None:
    (migrations_copy / "seed.sql").write_text("create table public.bridge_seed (id int);")
    with pytest.raises(MigrationError, match=r"seed\.sql .* is not named NNNN_name\.sql"):
        migrate(empty_database, migrations_copy)
    with psycopg.connect(empty_database) as connection:
        assert connection.execute("select to_regclass('public.options_flow')").fetchone() == (None,)


def test_pending_lists_what_is_not_applied_yet(empty_database: str, migrations_copy: Path) -> None:
    assert pending(empty_database, migrations_copy) == SHIPPED
    migrate(empty_database, migrations_copy)
    (migrations_copy / "0093_next.sql").write_text("create table public.bridge_next (id int);")
    assert pending(empty_database, migrations_copy) == ["0093_next"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bridge:Sup3rSecret@127.0.0.1:1/postgres?connect_timeout=2",
        "host=127.0.0.1 port=1 user=bridge password=Sup3rSecret dbname=postgres",
        "postgresql://bridge:Sup3r@Secret@127.0.0.1:1/postgres",  # unencoded '@': libpq misreads it
        "host=127.0.0.1 password=Sup3r Secret",  # malformed: libpq's message would quote "Secret"
    ],
)
def test_no_form_of_bad_url_leaks_the_password(url: str) -> None:
    with pytest.raises(DatabaseUnreachable) as caught:
        pending(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "Secret" not in message and "Sup3r" not in message
