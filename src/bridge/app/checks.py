"""``bridge check``: can this configuration reach what it needs? One line per thing tried."""

from __future__ import annotations

import httpx
import orjson
import psycopg
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from bridge.adapters.feeds.benzinga import with_token
from bridge.adapters.feeds.tastytrade import authorization
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
        if name == "benzinga" and settings.benzinga_api_key:
            url = with_token(settings.benzinga_url, settings.benzinga_api_key)
            results.append(trio.run(check_websocket, name, url, None))
        if name == "polygon" and settings.polygon_api_key:
            results.append(trio.run(check_polygon, settings.polygon_url, settings.polygon_api_key))
        if name == "tastytrade" and settings.tastytrade_token and settings.tastytrade_accounts:
            account = settings.tastytrade_accounts[0]
            results.append(check_rest(name, f"{settings.tastytrade_api_url}/accounts/{account}/balances",
                                      authorization(settings.tastytrade_token)))  # fmt: skip
        if name == "tradier" and settings.tradier_token and settings.tradier_accounts:
            account = settings.tradier_accounts[0]
            results.append(check_rest(name, f"{settings.tradier_api_url}/accounts/{account}/balances",
                                      f"Bearer {settings.tradier_token}"))  # fmt: skip
        if name == "schwab" and settings.schwab_token:
            results.append(
                check_rest(name, f"{settings.schwab_api_url}/userPreference", f"Bearer {settings.schwab_token}")
            )
    return results


def check_rest(feed: str, url: str, authorization_header: str) -> CheckResult:
    """A broker's REST API with the configured token (what the feed fetches first)."""
    try:
        response = httpx.get(url, headers={"Authorization": authorization_header, "Accept": "application/json"},
                             timeout=15)  # fmt: skip
    except httpx.HTTPError as exc:
        return (f"feed {feed}", False, f"cannot reach the REST API: {type(exc).__name__}: {exc}")
    if response.status_code in (401, 403):
        return (f"feed {feed}", False, f"credentials rejected (HTTP {response.status_code})")
    if response.is_error:
        return (f"feed {feed}", False, f"the REST API answered HTTP {response.status_code}")
    return (f"feed {feed}", True, "the REST API accepted the token")


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


async def check_polygon(url: str, api_key: str) -> CheckResult:
    """Connect and authenticate as the feed would, without subscribing to anything."""
    try:
        with trio.fail_after(15):
            async with open_websocket_url(url, connect_timeout=10) as ws:
                await ws.get_message()  # the "connected" status
                await ws.send_message(orjson.dumps({"action": "auth", "params": api_key}).decode())
                while True:
                    for event in orjson.loads(await ws.get_message()):
                        status = event.get("status") if isinstance(event, dict) else None
                        if status == "auth_success":
                            return ("feed polygon", True, "connected and the API key was accepted")
                        if status in ("auth_failed", "auth_timeout"):
                            return ("feed polygon", False, f"API key refused ({status}: {event.get('message')})")
    except (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError, orjson.JSONDecodeError) as exc:
        return ("feed polygon", False, f"cannot connect or authenticate: {type(exc).__name__}: {exc}")
