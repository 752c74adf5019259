"""Counters the pipeline keeps while it runs: read by the live view, the summaries and the metrics.

Plain mutable counters, touched only from the trio thread, so they need no locking.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter, defaultdict
from datetime import datetime
from typing import Final

import attrs

from bridge.domain.models import Table


class FeedState(enum.StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS_BUCKETS: Final = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000)


@attrs.define
class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape, kept as plain numbers until scraped."""

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def cumulative(self) -> list[tuple[str, int]]:
        running, buckets = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (coarse, for summaries)."""
        target, running = q * self.count, 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            if running >= target and count:
                return bound
        return 0.0


def _histograms(bounds: tuple[float, ...]) -> defaultdict[Table, Histogram]:
    return defaultdict(lambda: Histogram(bounds))


@attrs.define
class PipelineStats:
    frames_received: Counter[str] = attrs.Factory(Counter)
    frames_dead_lettered: Counter[str] = attrs.Factory(Counter)
    dead_letters_by_reason: Counter[tuple[str, str]] = attrs.Factory(Counter)
    """(feed, kind) → dead letters, for the metrics."""
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
    batch_rows: defaultdict[Table, Histogram] = attrs.Factory(lambda: _histograms(ROWS_BUCKETS))
    write_seconds: defaultdict[Table, Histogram] = attrs.Factory(lambda: _histograms(LATENCY_BUCKETS_S))
    commit_latency_s: Histogram = attrs.Factory(lambda: Histogram(LATENCY_BUCKETS_S))
    """Received → committed, per row."""
    last_commit_s: float | None = None
    """trio's clock at the last successful write (readiness: the database answers)."""
    feeds_ever_connected: set[str] = attrs.Factory(set)
    """Feeds that have connected at least once since start: a feed that never did is not ready."""
    write_retrying_since: dict[Table, float] = attrs.Factory(dict)
    """trio's clock when the batch a writer is retrying first failed (absent while writes succeed)."""
    credential_expiry: dict[tuple[str, str], datetime] = attrs.Factory(dict)
    """(feed, kind) → when that credential expires (UTC); kind is ``access`` or ``refresh``."""
    credential_problems: dict[str, str] = attrs.Factory(dict)
    """feed → why its credentials fail or are about to (a refresh that failed, a refresh token near expiry)."""
    blind_seconds: defaultdict[str, float] = attrs.Factory(lambda: defaultdict(float))
    """feed → seconds during which it was not receiving (closed gaps)."""
    journal_bytes: int = 0
    """Bytes of journal segments on disk."""
    journal_budget_bytes: int | None = None
    journal_paused: str | None = None
    """Why the feeds stopped reading (journal budget reached, disk full); ``None`` while they read."""
    journal_damaged_records: int = 0
    lease_held: dict[str, bool] = attrs.Factory(dict)
    """feed → whether this process holds the feed's lease."""

    @property
    def rows_in_flight(self) -> int:
        """Rows normalized and not yet committed: what waits for, or is in, a write."""
        return max(0, sum(self.rows_normalized.values()) - sum(self.rows_committed.values()))

    @property
    def total_frames(self) -> int:
        return sum(self.frames_received.values())

    @property
    def total_rows_written(self) -> int:
        return sum(count for table, count in self.rows_written.items() if table != Table.DEAD_LETTERS)
