"""Polling REST snapshots on a schedule, and at once when a stream says something changed.

Brokers that stream activity but serve state over REST (Tradier, Schwab) share this loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio


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
