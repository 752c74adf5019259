"""What `/healthz`, `/readyz` and `/metrics` say, computed from the pipeline's own counters at request time.

`/healthz` answers 200 whenever the event loop runs. `/readyz` is 503 with one reason per problem: the
database does not answer its ping, a feed never connected since start (or connected and stopped), a writer
has retried one batch past its limit, the journal stopped the feeds, or a feed's credentials fail.
The Prometheus collector reads ``PipelineStats`` when scraped instead of keeping a second set of
counters, so the metrics cannot drift from what the live view and summaries show.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Final

import orjson
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.adapters.feeds.websocket import OVERSIZED_CLOSES
from bridge.adapters.http import Request, Response, Route
from bridge.app.stats import FeedState, Histogram, PipelineStats
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.ports import Normalizer, Repository

READY_FEED_STATES: Final = frozenset({FeedState.CONNECTED, FeedState.BACKOFF, FeedState.FINISHED})
DATABASE_CHECK_TIMEOUT_S: Final = 3.0
WRITE_RETRY_LIMIT_S: Final = 30.0
"""A writer retrying one batch for longer than this makes the process not ready."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class DatabaseProbe:
    """The database ping behind ``/readyz``: on a thread limiter of its own, at most one at a time, bounded.

    Writes use trio's default thread limiter; a probe sharing it would wait behind a slow COPY and report
    the database down while it is merely busy. A ping that outlives its deadline keeps its thread (a
    blocking call cannot be interrupted), so later probes do not start another: they wait for it within
    their own deadline, then report that it is still running.
    """

    def __init__(self, ping: Callable[[], None], timeout_s: float = DATABASE_CHECK_TIMEOUT_S) -> None:
        self.ping = ping
        self.timeout_s = timeout_s
        self.limiter = trio.CapacityLimiter(1)
        self.running_since: float | None = None
        self.last_problem: str | None = None
        self.done = trio.Event()

    def _finished(self, problem: str | None) -> None:
        self.last_problem, self.running_since = problem, None
        self.done.set()

    def _ping_in_thread(self, token: trio.lowlevel.TrioToken) -> None:
        try:
            self.ping()
            problem = None
        except Exception as exc:  # any failure means "not ready", reported, never raised
            problem = f"database: {_describe(exc)}"
        with contextlib.suppress(trio.RunFinishedError):  # the process is stopping; nobody asks any more
            trio.from_thread.run_sync(self._finished, problem, trio_token=token)

    async def check(self) -> str | None:
        """None when the database answered; otherwise the reason, for ``/readyz``."""
        now = trio.current_time()
        if self.running_since is None:
            self.running_since, self.done = now, trio.Event()
            token = trio.lowlevel.current_trio_token()
            with trio.move_on_after(self.timeout_s):
                await trio.to_thread.run_sync(self._ping_in_thread, token, limiter=self.limiter, abandon_on_cancel=True)
            if self.running_since is None:
                return self.last_problem
            return f"database: no answer within {self.timeout_s:g} s"
        started, done = self.running_since, self.done
        with trio.move_on_after(max(0.0, started + self.timeout_s - now)):
            await done.wait()
        if done.is_set():
            return self.last_problem
        return f"database: probe still running > {trio.current_time() - started:.0f} s"


def _histogram(name: str, doc: str, histograms: Mapping[str, Histogram], label: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, histogram in histograms.items():
        family.add_metric([value] if label else [], histogram.cumulative(), histogram.total)
    return family


def utc_now() -> datetime:
    return datetime.now(UTC)


class BridgeCollector(Collector):
    def __init__(
        self,
        stats: PipelineStats,
        normalizers: Mapping[str, Normalizer],
        *,
        wall_clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = trio.current_time,
    ) -> None:
        self.stats = stats
        self.normalizers = normalizers
        self.wall_clock = wall_clock
        self.monotonic = monotonic

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
        yield from self._second_round()
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

    def _second_round(self) -> Iterator[Metric]:
        """Oversized closes, credentials, gaps, leases, the journal and stuck writers."""
        closes = CounterMetricFamily(
            "bridge_frames_oversized_closes",
            "Connections the transport closed for a message over its limit (the message is dead-lettered)",
            labels=["feed"],
        )
        for feed, closed in OVERSIZED_CLOSES.items():
            closes.add_metric([feed], closed)
        yield closes
        stats = self.stats
        expires = GaugeMetricFamily("bridge_credential_expires_in_seconds",
                                    "Seconds until the credential expires (negative: expired)",
                                    labels=["feed", "kind"])  # fmt: skip
        now = self.wall_clock()
        for (feed, kind), at in sorted(stats.credential_expiry.items()):
            expires.add_metric([feed, kind], (at - now).total_seconds())
        blind = CounterMetricFamily(
            "bridge_feed_blind_seconds", "Seconds the feed was not receiving (closed gaps)", labels=["feed"]
        )
        for feed, seconds in sorted(stats.blind_seconds.items()):
            blind.add_metric([feed], seconds)
        lease = GaugeMetricFamily("bridge_lease_held", "1 while this process holds the feed's lease", labels=["feed"])
        for feed, held in sorted(stats.lease_held.items()):
            lease.add_metric([feed], 1 if held else 0)
        yield from (expires, blind, lease)
        yield GaugeMetricFamily("bridge_journal_bytes", "Bytes of journal segments on disk", value=stats.journal_bytes)
        budget = GaugeMetricFamily("bridge_journal_budget_bytes", "The journal's disk budget")
        if stats.journal_budget_bytes is not None:
            budget.add_metric([], stats.journal_budget_bytes)
        yield budget
        yield GaugeMetricFamily("bridge_journal_paused", "1 while the feeds stop reading (journal budget or disk full)",
                                value=1 if stats.journal_paused else 0)  # fmt: skip
        yield CounterMetricFamily("bridge_journal_damaged_records", "Damaged journal records skipped",
                                  value=stats.journal_damaged_records)  # fmt: skip
        retrying = GaugeMetricFamily("bridge_writer_retrying_seconds",
                                     "Seconds the writer has been retrying its current batch (0 while writes succeed)",
                                     labels=["table"])  # fmt: skip
        clock = self.monotonic()
        tables = {*stats.rows_committed, *stats.write_failures, *stats.write_retrying_since}
        for table in sorted(tables):
            since = stats.write_retrying_since.get(table)
            retrying.add_metric([str(table)], 0.0 if since is None else max(0.0, clock - since))
        yield retrying


def readiness_problems(stats: PipelineStats, now: float, write_retry_limit_s: float) -> list[str]:
    """Why the process is not ready, apart from the database: one reason per problem, stable order."""
    problems: list[str] = []
    for feed, current in sorted(stats.feed_state.items()):
        ever = feed in stats.feeds_ever_connected or current == FeedState.CONNECTED
        if not ever:
            error = stats.feed_last_error.get(feed)
            problems.append(f"feed {feed}: {current}, never connected since start"
                            + (f"; last error: {error}" if error else ""))  # fmt: skip
        elif current not in READY_FEED_STATES:
            problems.append(f"feed {feed}: {current}")
    for table, since in sorted(stats.write_retrying_since.items()):
        if now - since > write_retry_limit_s:
            problems.append(f"writer {table}: retrying one batch for {now - since:.0f} s"
                            f" (limit {write_retry_limit_s:g} s)")  # fmt: skip
    if stats.journal_paused:
        problems.append(f"journal: feeds paused: {stats.journal_paused}")
    for feed, reason in sorted(stats.credential_problems.items()):
        problems.append(f"credentials {feed}: {reason}")
    return problems


def http_routes(
    stats: PipelineStats,
    normalizers: Mapping[str, Normalizer],
    repository: Repository,
    *,
    write_retry_limit_s: float = WRITE_RETRY_LIMIT_S,
    database_check_timeout_s: float = DATABASE_CHECK_TIMEOUT_S,
    wall_clock: Callable[[], datetime] = utc_now,
) -> dict[str, Route]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(stats, normalizers, wall_clock=wall_clock))
    probe = DatabaseProbe(repository.ping, database_check_timeout_s)

    async def healthz(request: Request) -> Response:
        return Response(200, b"ok\n")  # answering at all proves the event loop runs

    async def readyz(request: Request) -> Response:
        database = await probe.check()
        problems = [database] if database else []
        problems += readiness_problems(stats, trio.current_time(), write_retry_limit_s)
        body = orjson.dumps({"ready": not problems, "problems": problems,
                             "feeds": {feed: str(current) for feed, current in stats.feed_state.items()}})  # fmt: skip
        return Response(200 if not problems else 503, body + b"\n", "application/json")

    async def metrics(request: Request) -> Response:
        return Response(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}
