"""Broker REST: polling snapshots on a schedule (and at once when a stream says something changed),
authorized requests that renew a refused token once, and what a refused token means. Tradier, Schwab
and tastytrade's snapshots share these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import trio

from bridge.adapters.credentials import Credentials
from bridge.adapters.feeds.websocket import REJECTED_CREDENTIALS_RETRY_S
from bridge.domain.ports import RetryLater


def raise_for_refusal(response: httpx.Response) -> None:
    """401/403: the token is refused (retry after the long wait); other errors as httpx raises them."""
    if response.status_code in (401, 403):
        raise RetryLater(f"the REST API refused the token (HTTP {response.status_code})", REJECTED_CREDENTIALS_RETRY_S)
    response.raise_for_status()


async def authorized(
    client: httpx.AsyncClient, credentials: Credentials, method: str, url: str, **options: Any
) -> httpx.Response:
    """``client.request`` with the current token; a 401/403 renews the token and tries once more.

    A fixed token cannot be renewed: its refusal raises ``RetryLater`` (the long wait), as does a
    renewed token that is refused again.
    """
    for attempt in (1, 2):
        token = await credentials.get()
        headers = {**options.pop("headers", {}), "Authorization": f"Bearer {token}"}
        response = await client.request(method, url, headers=headers, **options)
        if response.status_code not in (401, 403):
            response.raise_for_status()
            return response
        reason = f"the REST API refused the token (HTTP {response.status_code})"
        if attempt == 2:
            raise RetryLater(f"{reason}, renewed or not", REJECTED_CREDENTIALS_RETRY_S)
        await credentials.refused(token, reason)
        options["headers"] = {key: value for key, value in headers.items() if key != "Authorization"}
    raise AssertionError("unreachable")  # pragma: no cover


@attrs.define
class Poller:
    poll: Callable[[], Awaitable[None]]
    interval_s: float
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)

    def wake(self) -> None:
        """Poll now (a fill, an account-activity message) instead of at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self.interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.poll()
