"""Counters the pipeline keeps while it runs: read by the live view, the summaries and the metrics.

Plain mutable counters, touched only from the trio thread, so they need no locking.
"""

from __future__ import annotations

import enum
from collections import Counter

import attrs

from bridge.domain.models import Table


class FeedState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


@attrs.define
class PipelineStats:
    frames_received: Counter[str] = attrs.Factory(Counter)
    frames_dead_lettered: Counter[str] = attrs.Factory(Counter)
    rows_normalized: Counter[Table] = attrs.Factory(Counter)
    rows_committed: Counter[Table] = attrs.Factory(Counter)
    """Rows in batches the database acknowledged, duplicates included."""
    rows_written: Counter[Table] = attrs.Factory(Counter)
    """Rows the database reports as inserted, updated or deleted (a replayed duplicate counts 0)."""
    rows_rejected_by_database: Counter[Table] = attrs.Factory(Counter)
    write_failures: Counter[Table] = attrs.Factory(Counter)
    feed_state: dict[str, FeedState] = attrs.Factory(dict)
    feed_restarts: Counter[str] = attrs.Factory(Counter)
    feed_last_error: dict[str, str] = attrs.Factory(dict)

    @property
    def total_frames(self) -> int:
        return sum(self.frames_received.values())

    @property
    def total_rows_written(self) -> int:
        return sum(count for table, count in self.rows_written.items() if table != Table.DEAD_LETTERS)
