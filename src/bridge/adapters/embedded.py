"""The embedded PostgreSQL: a real server from the ``pgserver`` wheel, with its data under BRIDGE_HOME.

It needs no PostgreSQL installed on the machine. Data persists between runs; the server is
stopped when the last process using it leaves.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.logs import get_logger

log = get_logger(__name__, component="database")


class EmbeddedPostgresError(RuntimeError):
    pass


@contextmanager
def open_embedded_postgres(home: Path) -> Iterator[str]:
    """Start (or join) the embedded server for ``home`` and yield its libpq URL (a unix socket)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pgserver

    pgdata = (home / "pgdata").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:  # pgserver raises plain exceptions with the server log in the message
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbeddedPostgresError(f"the embedded PostgreSQL in {pgdata} did not start: {first_line}") from None
    log.debug("embedded PostgreSQL ready", pgdata=str(pgdata))
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
