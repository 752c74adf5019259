"""Broker REST: polling snapshots on a schedule (and at once when a stream says something changed),
and what a refused token means. Tradier, Schwab and tastytrade's snapshots share these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import httpx
import trio

from bridge.adapters.feeds.websocket import REJECTED_CREDENTIALS_RETRY_S
from bridge.domain.ports import RetryLater


def raise_for_refusal(response: httpx.Response) -> None:
    """401/403: the token is refused (retry after the long wait); other errors as httpx raises them."""
    if response.status_code in (401, 403):
        raise RetryLater(f"the REST API refused the token (HTTP {response.status_code})", REJECTED_CREDENTIALS_RETRY_S)
    response.raise_for_status()


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
