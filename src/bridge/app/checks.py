"""``bridge check``: can this configuration reach what it needs? One line per thing tried."""

from __future__ import annotations

import psycopg
import trio
from trio_websocket import ConnectionRejected, HandshakeError, open_websocket_url

from bridge.adapters.postgres.conninfo import redact_conninfo
from bridge.adapters.postgres.migrations import DatabaseUnreachable, pending
from bridge.app.database import open_database
from bridge.app.settings import Settings, feed_problems, selected_feeds

CheckResult = tuple[str, bool, str]


def run_checks(settings: Settings) -> list[CheckResult]:
    results = [check_database(settings)]
    feeds = selected_feeds(settings)
    problems = feed_problems(settings, feeds)
    results += [("feeds", False, problem) for problem in problems]
    for name in feeds:
        if name == "console" and settings.console_url:
            results.append(trio.run(check_websocket, name, settings.console_url, settings.console_token))
    return results


def check_database(settings: Settings) -> CheckResult:
    try:
        with open_database(settings.database_url, settings.home, apply_migrations=False) as url:
            with psycopg.connect(url, connect_timeout=10) as connection:
                version = connection.execute("show server_version").fetchone()
            waiting = pending(url)
        where = redact_conninfo(settings.database_url) if settings.database_url else f"embedded in {settings.home}"
        todo = f"; {len(waiting)} migration(s) pending: run `bridge migrate`" if waiting else "; schema up to date"
        return ("database", True, f"PostgreSQL {version[0] if version else '?'} at {where}{todo}")
    except DatabaseUnreachable as exc:
        return ("database", False, str(exc))
    except psycopg.Error as exc:
        return (
            "database",
            False,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )


async def check_websocket(feed: str, url: str, token: str | None) -> CheckResult:
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    try:
        with trio.fail_after(15):
            async with open_websocket_url(url, extra_headers=headers, connect_timeout=10):
                pass
    except ConnectionRejected as exc:
        meaning = "credentials rejected" if exc.status_code in (401, 403) else "connection rejected"
        return (f"feed {feed}", False, f"{meaning} (HTTP {exc.status_code})")
    except (HandshakeError, OSError, trio.TooSlowError) as exc:
        return (f"feed {feed}", False, f"cannot connect: {type(exc).__name__}: {exc}")
    return (f"feed {feed}", True, "connected and accepted the credentials")
