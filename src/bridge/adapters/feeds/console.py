"""Feed ``console``: the Developer Console aggregator, in the bridge's canonical format.

The Console's own wire format is not fixed, so the protocol is the one the bridge defines: the
client connects with ``Authorization: Bearer <BRIDGE_CONSOLE_TOKEN>`` and receives frames of
``{"type": TABLE, "data": {...}}`` objects (or arrays of them). Nothing is sent after connecting.
"""

from __future__ import annotations

import attrs

from bridge.adapters.feeds.websocket import WebSocketSession
from bridge.domain.ports import Clock, FrameSink

NAME = "console"


@attrs.frozen
class ConsoleFeed:
    url: str
    token: str | None
    clock: Clock
    max_silence_s: float | None = 90.0
    name: str = NAME
    finite: bool = False

    async def run(self, sink: FrameSink) -> None:
        headers = [("Authorization", f"Bearer {self.token}")] if self.token else []
        session = WebSocketSession(
            feed=self.name, url=self.url, clock=self.clock, headers=headers, max_silence_s=self.max_silence_s
        )
        await session.run(sink)
