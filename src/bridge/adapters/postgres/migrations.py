"""A small migration runner: ordered plain-SQL files, each applied once, in its own transaction.

Applied files are recorded with their SHA-256 in ``bridge_schema_migrations``; an applied file that
has since been edited stops the run (fix it with a new migration instead). A transaction-level
advisory lock serialises concurrent runs, so several pods may run ``bridge migrate`` at once (even
through a transaction pooler): each file is applied once, the other runs find it done.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import Final

import attrs
import psycopg

from bridge.adapters.postgres.conninfo import DatabaseUnreachable, describe_connection_error

__all__ = ["DatabaseUnreachable", "MigrationError", "default_migrations_dir", "migrate", "pending"]

LOCK_KEY: Final = 0x5B_B1D6E  # arbitrary, fixed: "stream bridge migrations"
CONNECT_TIMEOUT_S: Final = 10
_FILE_NAME: Final = re.compile(r"[0-9]{4,}_[A-Za-z0-9_.-]+\.sql")
_CREATE_LEDGER: Final = """
    create table if not exists public.bridge_schema_migrations (
        version    text        primary key,
        checksum   text        not null,
        applied_at timestamptz not null default now()
    )
"""
_LEDGER_NEEDS_RLS: Final = """
    select not relrowsecurity from pg_class where oid = 'public.bridge_schema_migrations'::regclass
"""


class MigrationError(Exception):
    """A migration cannot be applied safely (edited after it was applied, or it failed)."""


@attrs.frozen
class Migration:
    """One file: its version is the file name without ``.sql``; the checksum is the SHA-256 of its text."""

    version: str
    path: Path
    sql: str
    checksum: str


def default_migrations_dir() -> Path:
    """The packaged copy in a wheel (``bridge/_migrations``), else the repository's ``migrations/``."""
    packaged = importlib.resources.files("bridge") / "_migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[4] / "migrations"


def load_migrations(directory: Path) -> list[Migration]:
    """The ``*.sql`` files of ``directory`` in name order (``NNNN_name.sql``), with their checksums."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not _FILE_NAME.fullmatch(path.name):  # a typo must not be skipped silently, nor run out of order
            raise MigrationError(f"{path.name} in {directory} is not named NNNN_name.sql")
        sql = path.read_text(encoding="utf-8")  # newlines normalised: a CRLF checkout has the same checksum
        migrations.append(Migration(path.stem, path, sql, hashlib.sha256(sql.encode()).hexdigest()))
    if not migrations:
        raise MigrationError(f"no migration files (*.sql) in {directory}")
    return migrations


def connect(conninfo: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection, or ``DatabaseUnreachable`` (one line, redacted) when there is none."""
    try:
        # no server-side prepared statements: transaction poolers (Supabase port 6543) cannot keep them
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, prepare_threshold=None)
    except psycopg.Error as exc:  # OperationalError, or ProgrammingError for a malformed connection string
        raise DatabaseUnreachable(describe_connection_error(exc, conninfo)) from None


def _ensure_ledger(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the ledger if needed, with RLS: Supabase's API would otherwise let anon read and write it."""
    connection.execute(_CREATE_LEDGER)
    if (connection.execute(_LEDGER_NEEDS_RLS).fetchone() or (False,))[0]:
        connection.execute("alter table public.bridge_schema_migrations enable row level security")


def _applied(connection: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """Recorded version → checksum; empty when the ledger does not exist yet (nothing was applied)."""
    exists = connection.execute("select to_regclass('public.bridge_schema_migrations') is not null").fetchone()
    if not (exists and exists[0]):
        return {}
    rows = connection.execute("select version, checksum from public.bridge_schema_migrations").fetchall()
    return {str(version): str(checksum) for version, checksum in rows}


def _check_unedited(migrations: list[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"{migration.path.name} was edited after it was applied (recorded sha256 {recorded[:12]}…, "
                f"file now {migration.checksum[:12]}…); restore it and add a new migration instead"
            )


def pending(conninfo: str, directory: Path | None = None) -> list[str]:
    """Versions not applied yet (raises MigrationError if an applied file was edited); changes nothing."""
    migrations = load_migrations(directory or default_migrations_dir())
    with connect(conninfo) as connection:
        applied = _applied(connection)
    _check_unedited(migrations, applied)
    return [migration.version for migration in migrations if migration.version not in applied]


def migrate(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations in order; return the versions applied by this call.

    Each migration runs in its own transaction that first takes a transaction-level advisory lock
    and re-reads the ledger, so concurrent runs (several pods) apply each file once, and the lock
    holds through a transaction pooler too (a session lock would not).
    """
    migrations = load_migrations(directory or default_migrations_dir())
    done: list[str] = []
    with connect(conninfo) as connection:
        with connection.transaction():
            connection.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            _ensure_ledger(connection)
            _check_unedited(migrations, _applied(connection))
        for migration in migrations:
            try:
                with connection.transaction():
                    connection.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    if migration.version in _applied(connection):
                        continue
                    connection.execute(migration.sql.encode())
                    connection.execute(
                        "insert into public.bridge_schema_migrations (version, checksum) values (%s, %s)",
                        (migration.version, migration.checksum),
                    )
            except psycopg.Error as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MigrationError(f"{migration.path.name} failed and was rolled back: {first_line}") from None
            done.append(migration.version)
    return done
