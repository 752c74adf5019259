"""The embedded PostgreSQL: a real server from the ``pgserver`` wheel, with its data under BRIDGE_HOME.

It needs no PostgreSQL installed on the machine. Data persists between runs; the server is
stopped when the last process using it leaves.

pgserver is wrapped here for three sharp edges it has:

* It puts the unix socket in the data directory unless that path is too long for a socket (then it
  uses a short runtime directory). But ``pg_ctl`` passes the socket directory to the server
  unquoted, so a data directory whose path holds a space or a shell character cannot start. Such
  paths get their socket in the runtime directory too.
* It stops the server when the last process that registered in ``pgdata/.handle_pids.json`` leaves;
  a process that was killed never unregisters, so its stale pid would keep the server running
  forever after. Dead pids are pruned before joining.
* Its URL pastes the socket path into the query string unencoded and leaves the port implicit
  (``PGPORT`` in the environment would then point libpq at the wrong socket); ours is encoded and
  names the port.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from bridge.adapters.postgres.conninfo import DatabaseUnreachable
from bridge.logs import get_logger

log = get_logger(__name__, component="database")

_SAFE_SOCKET_DIR: Final = re.compile(r"[A-Za-z0-9_./+,:@%=-]+")
"""Characters that survive ``pg_ctl -o "-k <dir>"`` (no whitespace, quotes or shell syntax)."""


PGSERVER_MISSING: Final = (
    "the embedded PostgreSQL needs the pgserver package, which is not installed: "
    'pip install "stream-bridge[embedded]" (or ".[test]" in a clone), or set DATABASE_URL to a server of your own'
)


class EmbeddedPostgresError(DatabaseUnreachable):
    """The embedded server did not start; the message is one line and says why.

    A kind of ``DatabaseUnreachable``, so the CLI prints it as its one-line message, not a traceback.
    """


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        try:
            import pgserver
            import pgserver.postgres_server
        except ImportError:  # an optional extra: the production image has no embedded server
            raise EmbeddedPostgresError(PGSERVER_MISSING) from None

    _install_safe_socket_dir(pgserver.postgres_server)
    return pgserver


def _install_safe_socket_dir(module: Any) -> None:
    """Make pgserver pick a socket directory that ``pg_ctl`` can pass on (see the module docstring)."""
    original: Callable[[Path, Path], Path] = module.find_suitable_socket_dir
    if getattr(original, "_bridge_safe", False):
        return

    def find_socket_dir(pgdata: Path, runtime_path: Path) -> Path:
        if _SAFE_SOCKET_DIR.fullmatch(str(pgdata)):
            return original(pgdata, runtime_path)
        alias = runtime_path / ("bridge-" + hashlib.sha256(str(pgdata).encode()).hexdigest()[:12])
        alias.mkdir(parents=True, exist_ok=True)
        return original(alias, runtime_path)

    find_socket_dir._bridge_safe = True  # type: ignore[attr-defined]
    module.find_suitable_socket_dir = find_socket_dir


def _pid_alive(pid: int) -> bool:
    """Running (a killed process can linger as a zombie until it is reaped: that is not running)."""
    import psutil  # a dependency of pgserver

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: it exists
        return True


def _prune_dead_handles(pgserver: Any, pgdata: Path) -> None:
    """Forget processes that registered with the server and died without unregistering (killed)."""
    handles = pgdata / ".handle_pids.json"
    with pgserver.postgres_server.PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(pids, list):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))
            log.info("forgot embedded PostgreSQL users that had died", pids=[pid for pid in pids if pid not in alive])


def _url(server: Any) -> str:
    """A libpq URL for the server's socket (or TCP address), with the path percent-encoded."""
    info = server.get_postmaster_info()
    port = info.port or 5432
    if info.socket_dir is not None:
        return f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}&port={port}"
    return f"postgresql://postgres@{info.hostname}:{port}/postgres"


def _why_it_failed(exc: BaseException, pgdata: Path) -> str:
    """The server log's last FATAL/ERROR/PANIC line if there is one, else the exception's first line."""
    try:
        lines = (pgdata / "log").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if any(level in line for level in ("FATAL:", "PANIC:", "ERROR:")):
            return line.strip()
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def open_embedded_postgres(home: Path) -> Iterator[str]:
    """Start (or join) the embedded server for ``home`` and yield its libpq URL (a unix socket).

    The data lives in ``home / "pgdata"`` (created if needed and reused, so data persists); the
    server is stopped on exit unless another process still uses it. Trust authentication on a
    socket only the local user can reach: the URL has no password.
    """
    pgserver = _pgserver()
    pgdata = (home / "pgdata").resolve()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        _prune_dead_handles(pgserver, pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises plain exceptions (pg_ctl's, OSError, RuntimeError)
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL in {pgdata} did not start: {_why_it_failed(exc, pgdata)}"
        ) from None
    url = _url(server)
    log.debug("embedded PostgreSQL ready", pgdata=str(pgdata), url=url)
    try:
        yield url
    finally:
        server.cleanup()
