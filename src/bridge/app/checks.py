"""``bridge check``: can this configuration reach what it needs? One line per thing tried.

The database is tried here; each selected feed by its registry entry's probe. No detail shows a
secret: the database is described by host, port, name, user and pool mode, never its password.
"""

from __future__ import annotations

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict

from bridge.adapters.postgres.conninfo import redact_conninfo
from bridge.adapters.postgres.migrations import DatabaseUnreachable, MigrationError, pending
from bridge.adapters.postgres.repository import resolve_pool_mode
from bridge.app.database import EmbeddedDatabaseFailed, open_database
from bridge.app.registry import FEEDS
from bridge.app.settings import Settings, feed_problems, selected_feeds
from bridge.app.vendors.base import CheckResult

__all__ = ["CheckResult", "describe_database", "run_checks"]


def run_checks(settings: Settings) -> list[CheckResult]:
    results = [check_database(settings)]
    feeds = selected_feeds(settings)
    results += [("feeds", False, problem) for problem in feed_problems(settings, feeds)]
    for name in feeds:
        spec = FEEDS[name]
        vendor = settings.vendors[name]
        if not spec.problems(vendor):
            results.append(trio.run(spec.probe, vendor))
    return results


def describe_database(settings: Settings) -> str:
    """Where the database is, in parts that are safe to show (no password, ever)."""
    if not settings.database_url:
        return f"embedded PostgreSQL in {settings.home} (DATABASE_URL unset)"
    try:
        params = conninfo_to_dict(settings.database_url)
    except psycopg.Error:
        return "(DATABASE_URL cannot be parsed)"
    mode = resolve_pool_mode(settings.database_url, settings.db_pool_mode)
    mode_shown = f"{mode} (auto)" if settings.db_pool_mode == "auto" else mode
    parts = [f"host={params.get('host') or params.get('hostaddr') or 'localhost (socket)'}",
             f"port={params.get('port') or 5432}", f"dbname={params.get('dbname') or params.get('user') or '?'}",
             f"user={params.get('user') or '(default)'}", f"pool mode={mode_shown}"]  # fmt: skip
    if params.get("sslmode"):
        parts.append(f"sslmode={params['sslmode']}")
    return " ".join(parts)


def recent_gaps(url: str, limit: int = 5) -> list[str]:
    """The newest gaps of the ledger, one line each: feed, when, how long, why, what backfill did."""
    with psycopg.connect(url, connect_timeout=10) as connection:
        rows = connection.execute(
            "select feed, started_at, ended_at, reason, backfill_status, backfill_rows from public.bridge_feed_gaps"
            " where feed <> 'bridge.gaps' order by started_at desc limit %s",
            [limit],
        ).fetchall()
    lines = []
    for feed, started, ended, reason, status, rows_filled in rows:
        span = f"{(ended - started).total_seconds():.1f} s" if ended else "still open"
        backfill = f", backfill {status} ({rows_filled or 0} rows)" if status else ""
        lines.append(f"{feed} at {started:%Y-%m-%d %H:%M:%S}Z, {span}: {reason}{backfill}")
    return lines


def check_database(settings: Settings) -> CheckResult:
    try:
        with open_database(settings.database_url, settings.home, apply_migrations=False) as url:
            with psycopg.connect(url, connect_timeout=10) as connection:
                version = connection.execute("show server_version").fetchone()
            waiting = pending(url)
            recent = recent_gaps(url) if not waiting else []
        where = redact_conninfo(settings.database_url) if settings.database_url else f"embedded in {settings.home}"
        todo = f"; {len(waiting)} migration(s) pending: run `bridge migrate`" if waiting else "; schema up to date"
        shown = "".join(f"\n  gap {line}" for line in recent) or ("\n  no feed gaps recorded" if not waiting else "")
        return ("database", True, f"PostgreSQL {version[0] if version else '?'} at {where}{todo}{shown}")
    except (DatabaseUnreachable, EmbeddedDatabaseFailed, MigrationError) as exc:
        return ("database", False, str(exc))
    except psycopg.Error as exc:
        text = str(exc).strip()
        return ("database", False, text.splitlines()[0] if text else type(exc).__name__)
