"""The ways ``bridge check`` tries a feed: a WebSocket handshake, or a REST request with the token.

Each returns a ``CheckResult`` and never raises for what the network or the vendor does; details name
the HTTP status or the exception type, never a credential.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionRejected, HandshakeError, open_websocket_url

from bridge.adapters.credentials import TRANSIENT, RefreshingToken
from bridge.app.vendors.base import CheckResult
from bridge.domain.ports import RetryLater

TIMEOUT_S = 15.0


async def check_websocket(feed: str, url: str, token: str | None) -> CheckResult:
    """Open the WebSocket (with the bearer token, if any) as the feed would."""
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    try:
        with trio.fail_after(TIMEOUT_S):
            async with open_websocket_url(url, extra_headers=headers, connect_timeout=10):
                pass
    except ConnectionRejected as exc:
        meaning = "credentials rejected" if exc.status_code in (401, 403) else "connection rejected"
        return (f"feed {feed}", False, f"{meaning} (HTTP {exc.status_code})")
    except (HandshakeError, OSError, trio.TooSlowError) as exc:
        return (f"feed {feed}", False, f"cannot connect: {why(exc)}")
    return (f"feed {feed}", True, "connected and accepted the credentials")


def why(exc: BaseException) -> str:
    """``Type: message`` of the error that says most (a ``HandshakeError`` has no text; its cause does)."""
    while not str(exc) and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def check_rest(feed: str, url: str, authorization_header: str) -> CheckResult:
    """A broker's REST API with the configured token (what the feed fetches first)."""
    headers = {"Authorization": authorization_header, "Accept": "application/json"}
    try:
        response = await trio.to_thread.run_sync(lambda: httpx.get(url, headers=headers, timeout=TIMEOUT_S))
    except httpx.HTTPError as exc:
        return (f"feed {feed}", False, f"cannot reach the REST API: {type(exc).__name__}: {exc}")
    if response.status_code in (401, 403):
        return (f"feed {feed}", False, f"credentials rejected (HTTP {response.status_code})")
    if response.is_error:
        return (f"feed {feed}", False, f"the REST API answered HTTP {response.status_code}")
    return (f"feed {feed}", True, "the REST API accepted the token")


def utc_now() -> datetime:
    return datetime.now(UTC)


def bridge_home() -> Path:
    """``BRIDGE_HOME`` as the core settings read it: a probe gets only its vendor's settings, and minting
    a token must use (and update) the same kept refresh token as the running service, or a vendor that
    rotates refresh tokens would lock that service out."""
    return Path(os.environ.get("BRIDGE_HOME") or ".bridge")


async def check_minted(feed: str, credentials: RefreshingToken, url: str) -> CheckResult:
    """Mint an access token from the refresh token, then try the REST API with it; say when each expires."""
    try:
        expiry = await credentials.mint()
        token = await credentials.get()
    except RetryLater as exc:
        return (f"feed {feed}", False, str(exc))
    except TRANSIENT as exc:
        return (f"feed {feed}", False, f"cannot reach the token endpoint: {type(exc).__name__}: {exc}")
    refresh = "not stated by the vendor" if expiry.refresh is None else expiry.refresh.isoformat()
    what, ok, detail = await check_rest(feed, url, f"Bearer {token}")
    return (what, ok, f"{detail}; access token minted, expires {expiry.access.isoformat()}, refresh token {refresh}")
