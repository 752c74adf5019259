"""What `/healthz`, `/readyz` and `/metrics` say, computed from the pipeline's own counters at request time.

The Prometheus collector reads ``PipelineStats`` when scraped instead of keeping a second set of
counters, so the metrics cannot drift from what the live view and summaries show.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

import orjson
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.adapters.http import Request, Response, Route
from bridge.app.stats import FeedState, Histogram, PipelineStats
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.ports import Normalizer, Repository

READY_FEED_STATES: Final = frozenset({FeedState.CONNECTED, FeedState.BACKOFF, FeedState.FINISHED})
DATABASE_CHECK_TIMEOUT_S: Final = 3.0


def _histogram(name: str, doc: str, histograms: Mapping[str, Histogram], label: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, histogram in histograms.items():
        family.add_metric([value] if label else [], histogram.cumulative(), histogram.total)
    return family


class BridgeCollector(Collector):
    def __init__(self, stats: PipelineStats, normalizers: Mapping[str, Normalizer]) -> None:
        self.stats = stats
        self.normalizers = normalizers

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        frames = CounterMetricFamily("bridge_frames_received", "Frames received per feed", labels=["feed"])
        for feed, count in stats.frames_received.items():
            frames.add_metric([feed], count)
        dead = CounterMetricFamily(
            "bridge_frames_dead_lettered", "Frames dead-lettered per feed and reason", labels=["feed", "reason"]
        )
        for (feed, reason), count in stats.dead_letters_by_reason.items():
            dead.add_metric([feed, reason], count)
        written = CounterMetricFamily("bridge_rows_written", "Rows inserted, updated or deleted", labels=["table"])
        committed = CounterMetricFamily("bridge_rows_committed", "Rows in committed batches", labels=["table"])
        rejected = CounterMetricFamily("bridge_rows_rejected", "Rows the database refused", labels=["table"])
        failures = CounterMetricFamily("bridge_write_failures", "Failed write attempts (retried)", labels=["table"])
        by_table = (
            (written, stats.rows_written),
            (committed, stats.rows_committed),
            (rejected, stats.rows_rejected_by_database),
            (failures, stats.write_failures),
        )
        for family, counter in by_table:
            for table, count in counter.items():
                family.add_metric([str(table)], count)
        connected = GaugeMetricFamily("bridge_feed_connected", "1 when the feed's stream is up", labels=["feed"])
        state = GaugeMetricFamily(
            "bridge_feed_state", "The feed's state (1 for the current one)", labels=["feed", "state"]
        )
        restarts = CounterMetricFamily("bridge_feed_reconnects", "Reconnections per feed", labels=["feed"])
        for feed, current in stats.feed_state.items():
            connected.add_metric([feed], 1 if current == FeedState.CONNECTED else 0)
            state.add_metric([feed, str(current)], 1)
            restarts.add_metric([feed], stats.feed_restarts[feed])
        yield from (frames, dead, written, committed, rejected, failures, connected, state, restarts)
        yield _histogram(
            "bridge_batch_rows", "Rows per written batch", {str(t): h for t, h in stats.batch_rows.items()}, "table"
        )
        yield _histogram(
            "bridge_write_seconds",
            "Time to write one batch",
            {str(t): h for t, h in stats.write_seconds.items()},
            "table",
        )
        yield _histogram(
            "bridge_commit_latency_seconds", "Received → committed, per row", {"": stats.commit_latency_s}, ""
        )
        yield GaugeMetricFamily("bridge_pending_rows", "Rows normalized, not yet committed", value=stats.rows_in_flight)
        buffered = GaugeMetricFamily("bridge_buffer_rows", "Rows a writer holds in memory", labels=["table"])
        spooled = GaugeMetricFamily("bridge_spool_bytes", "Bytes waiting in the disk spool", labels=["table"])
        for table, rows in stats.buffer_rows.items():
            buffered.add_metric([str(table)], rows)
        for table, size in stats.spool_bytes.items():
            spooled.add_metric([str(table)], size)
        yield buffered
        yield spooled
        for normalizer in self.normalizers.values():
            if isinstance(normalizer, PolygonNormalizer):
                yield CounterMetricFamily("bridge_polygon_trades", "Polygon trades normalized", value=normalizer.trades)
                yield CounterMetricFamily("bridge_polygon_trades_without_quote",
                                          "Polygon trades with no usable NBBO (side unknown)",
                                          value=normalizer.trades_without_quote)  # fmt: skip
                yield GaugeMetricFamily(
                    "bridge_nbbo_contracts", "Contracts in the NBBO book", value=len(normalizer.book)
                )
                yield CounterMetricFamily("bridge_nbbo_evicted",
                                          "Contracts evicted from the NBBO book (idle or over the limit)",
                                          value=normalizer.book.evicted)  # fmt: skip


def http_routes(
    stats: PipelineStats, normalizers: Mapping[str, Normalizer], repository: Repository
) -> dict[str, Route]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(stats, normalizers))

    async def healthz(request: Request) -> Response:
        return Response(200, b"ok\n")  # answering at all proves the event loop runs

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        with trio.move_on_after(DATABASE_CHECK_TIMEOUT_S) as timed:
            try:
                await trio.to_thread.run_sync(repository.ping, abandon_on_cancel=True)
            except Exception as exc:  # any failure means "not ready", reported, never raised
                problems.append(
                    f"database: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
                )
        if timed.cancelled_caught:
            problems.append(f"database: no answer within {DATABASE_CHECK_TIMEOUT_S:g} s")
        for feed, current in sorted(stats.feed_state.items()):
            if current not in READY_FEED_STATES:
                problems.append(f"feed {feed}: {current}")
        body = orjson.dumps({"ready": not problems, "problems": problems,
                             "feeds": {feed: str(current) for feed, current in stats.feed_state.items()}})  # fmt: skip
        return Response(200 if not problems else 503, body + b"\n", "application/json")

    async def metrics(request: Request) -> Response:
        return Response(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}
