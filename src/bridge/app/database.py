"""Which database the bridge talks to: ``DATABASE_URL``, or the embedded PostgreSQL under BRIDGE_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bridge.adapters.embedded import PGSERVER_MISSING, EmbeddedPostgresError, open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.logs import get_logger

log = get_logger(__name__, component="database")


class EmbeddedDatabaseFailed(Exception):
    """The embedded PostgreSQL could not start under BRIDGE_HOME; the message names the variable and the cause."""


@contextmanager
def open_database(database_url: str | None, home: Path, *, apply_migrations: bool = True) -> Iterator[str]:
    """Yield a connection URL, starting the embedded server when no URL is given; migrate it first."""
    if database_url:
        url = database_url
        if apply_migrations:
            _migrate(url)
        yield url
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(open_embedded_postgres(home))
        except EmbeddedPostgresError as exc:
            if str(exc) == PGSERVER_MISSING:  # not about BRIDGE_HOME: the message says what to install
                raise
            raise EmbeddedDatabaseFailed(
                f"BRIDGE_HOME={home}: {exc} (set BRIDGE_HOME to a writable directory, or DATABASE_URL to a server)"
            ) from None
        if apply_migrations:
            _migrate(url)
        yield url


def _migrate(url: str) -> None:
    applied = migrate(url)
    if applied:
        log.info("migrations applied", migrations=applied)
