"""The replay feed: recordings read back through the same pipeline as a live stream.

Each frame keeps the feed name and receive time it was recorded with, so replaying a recording
twice produces the same rows and ids. ``speed`` 0 replays as fast as the pipeline takes it; 1
keeps the recorded pacing, 10 is ten times faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from bridge.adapters.recording import InvalidRecordingLine, read_recording
from bridge.domain.ports import FrameSink
from bridge.logs import get_logger

log = get_logger(__name__)


@attrs.define
class ReplayFeed:
    paths: Sequence[Path]
    speed: float = 0.0
    name: str = "replay"
    finite: bool = True
    invalid_lines: int = 0

    async def run(self, sink: FrameSink) -> None:
        sink.connected(self.name)
        first_at = None
        started = trio.current_time()
        for path in self.paths:
            for number, item in read_recording(path):
                if isinstance(item, InvalidRecordingLine):
                    self.invalid_lines += 1
                    log.warning(
                        "skipped a line that is not a recording entry",
                        feed=self.name,
                        file=str(path),
                        line=number,
                        reason=str(item),
                    )
                    continue
                if self.speed > 0:
                    first_at = first_at or item.received_at
                    due = started + (item.received_at - first_at).total_seconds() / self.speed
                    await trio.sleep_until(due)
                else:
                    await trio.lowlevel.checkpoint()
                await sink.emit(item)
