"""One log line per interval saying what the bridge did in it: the pulse of ``bridge run`` in its logs.

Someone reading a pod's logs (or a log search) sees rates and latency without a metrics stack: per feed
its state and frames/s, rows committed per table, received→committed p99, blind seconds and dead letters,
all for the interval just ended (differences of two snapshots of the cumulative counters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import attrs
import trio

from bridge.app.stats import PipelineStats
from bridge.logs import get_logger

log = get_logger(__name__, component="progress")


def bucket_quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of per-bucket ``counts`` (last: +Inf); None if empty."""
    total = sum(counts)
    if total <= 0:
        return None
    running = 0.0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        running += count
        if count and running >= q * total:
            return bound
    return float("inf")


@attrs.frozen
class Snapshot:
    """The cumulative counters at one moment (copies: the stats keep changing)."""

    at: float
    frames: Counter[str]
    dead_letters: Counter[str]
    committed: Counter[str]
    blind_s: Counter[str]
    latency_bounds: tuple[float, ...]
    latency_counts: tuple[int, ...]

    @classmethod
    def take(cls, stats: PipelineStats, at: float) -> Snapshot:
        return cls(
            at=at,
            frames=Counter(stats.frames_received),
            dead_letters=Counter(stats.frames_dead_lettered),
            committed=Counter({str(table): rows for table, rows in stats.rows_committed.items()}),
            blind_s=Counter(stats.blind_seconds),
            latency_bounds=stats.commit_latency_s.bounds,
            latency_counts=tuple(stats.commit_latency_s.counts),
        )


def _delta(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in sorted(after)}


def progress_fields(before: Snapshot, after: Snapshot, states: Mapping[str, str]) -> dict[str, object]:
    """The log line's fields for the interval between two snapshots (pure, for tests)."""
    elapsed = max(after.at - before.at, 1e-9)
    latency = [b - a for a, b in zip(before.latency_counts, after.latency_counts, strict=True)]
    p99 = bucket_quantile(after.latency_bounds, latency, 0.99)
    feeds = sorted({*states, *after.frames})
    return {
        "interval_s": round(elapsed, 3),
        "feeds": {
            feed: f"{states.get(feed, 'unknown')} {(after.frames[feed] - before.frames[feed]) / elapsed:.1f} frames/s"
            for feed in feeds
        },
        "rows_committed": {table: int(rows) for table, rows in _delta(before.committed, after.committed).items()},
        "commit_p99_s": p99,
        "blind_s": {feed: round(seconds, 3) for feed, seconds in _delta(before.blind_s, after.blind_s).items()},
        "dead_letters": {feed: int(count) for feed, count in _delta(before.dead_letters, after.dead_letters).items()},
    }


async def serve_progress_log(stats: PipelineStats, interval_s: float = 60.0) -> None:
    """Log one ``progress`` info line every ``interval_s`` seconds, until cancelled."""
    before = Snapshot.take(stats, trio.current_time())
    while True:
        await trio.sleep(interval_s)
        after = Snapshot.take(stats, trio.current_time())
        states = {feed: str(state) for feed, state in stats.feed_state.items()}
        log.info("progress", **progress_fields(before, after, states))
        before = after
