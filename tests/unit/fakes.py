"""Feeds for application tests: they speak the Feed port and produce console-format frames."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs
import orjson
import trio

from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import FrameSink

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def trade_frame(n: int, feed: str = "console", **overrides: object) -> ReceivedFrame:
    data = {
        "event_ts": (T0 + timedelta(milliseconds=n)).isoformat(),
        "option_symbol": "SPY251219C00650000",
        "size": 1 + n % 7,
        "trade_price": 1.5,
        "sequence": n,
        **overrides,
    }
    return ReceivedFrame(feed, T0, orjson.dumps({"type": "options_flow", "data": data}).decode())


@attrs.define
class ScriptedFeed:
    """Emits ``frames`` one by one; ``fail_at`` maps a run number to the frame index it dies at."""

    frames: list[ReceivedFrame]
    name: str = "console"
    finite: bool = True
    fail_at: dict[int, int] = attrs.Factory(dict)
    runs: int = 0
    position: int = 0
    emitted: list[ReceivedFrame] = attrs.Factory(list)

    async def run(self, sink: FrameSink) -> None:
        self.runs += 1
        sink.connected(self.name)
        while self.position < len(self.frames):
            if self.fail_at.get(self.runs) == self.position:
                raise ConnectionError(f"connection reset on run {self.runs}")
            frame = self.frames[self.position]
            await sink.emit(frame)
            self.emitted.append(frame)
            self.position += 1
            await trio.sleep(0.001)


@attrs.define
class EndlessFeed:
    """A live feed that emits a new trade every ``interval_s`` until cancelled."""

    name: str = "console"
    finite: bool = False
    interval_s: float = 0.001
    make: Callable[[int], ReceivedFrame] = trade_frame
    emitted: int = 0

    async def run(self, sink: FrameSink) -> None:
        sink.connected(self.name)
        while True:
            await sink.emit(self.make(self.emitted))
            self.emitted += 1
            await trio.sleep(self.interval_s)
