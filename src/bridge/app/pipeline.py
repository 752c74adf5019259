"""The pipeline: feeds emit frames, normalizers turn them into rows, one writer per table stores them.

``open_pipeline`` owns the writers; leaving it closes every channel, which lets each writer drain
what it holds, flush its last batch and finish. ``run_bridge`` adds the feeds and the shutdown
rule: on a stop request the feeds are cancelled first, then the writers get the grace period to
flush.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from bridge.adapters.spool import DiskSpool
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import supervise_feed
from bridge.app.writer import Delivery, TableWriter
from bridge.domain.frames import dead_letter
from bridge.domain.models import DATA_TABLES, DeadLetter, ReceivedFrame, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import Clock, Feed, Normalizer, Repository
from bridge.logs import get_logger

log = get_logger(__name__, component="pipeline")

FrameTap = Callable[[ReceivedFrame], None]
"""Sees every frame as it arrives (the recorder)."""


@attrs.frozen
class PipelineConfig:
    batching: BatchPolicy = BatchPolicy()
    write_retry: BackoffPolicy = BackoffPolicy(initial_s=0.2, max_s=10.0)
    feed_restart: BackoffPolicy = BackoffPolicy()
    channel_capacity: int = 1024
    """Deliveries (one frame's rows for one table) a writer may hold before feeds wait."""
    shutdown_grace_s: float = 20.0
    max_frame_bytes: int = 16 * 1024 * 1024
    spool_dir: Path | None = None
    """Where writers spool batches the database cannot take; ``None``: hold the feeds back instead."""
    buffer_max_rows: int = 25_000
    """Rows each writer keeps in memory before spooling (or, without a spool, before feeds wait)."""
    options_flow_writers: int = 2
    """``options_flow`` batches written at once: the database stores one while the next is encoded."""
    repository_in_thread: bool = True
    """False only for in-memory fakes, so tests on trio's virtual clock stay deterministic."""


@attrs.define
class Pipeline:
    normalizers: Mapping[str, Normalizer]
    channels: Mapping[Table, trio.MemorySendChannel[Delivery]]
    stats: PipelineStats
    encode: Callable[[Table, Sequence[Row]], bytes | None]
    """The repository's ``encode``: rows are encoded as they are made (see ``Repository.encode``)."""
    tap: FrameTap | None = None
    max_frame_bytes: int = 16 * 1024 * 1024

    def _oversized(self, frame: ReceivedFrame) -> tuple[str, str] | None:
        if len(frame.text) * 4 <= self.max_frame_bytes:  # cheap: a character is at most 4 bytes
            return None
        size = len(frame.text.encode())
        if size <= self.max_frame_bytes:
            return None
        return "oversized", f"frame of {size:,} bytes exceeds BRIDGE_MAX_FRAME_BYTES ({self.max_frame_bytes:,})"

    def connected(self, feed: str) -> None:
        self.stats.feed_state[feed] = FeedState.CONNECTED
        self.stats.feeds_ever_connected.add(feed)

    async def emit(self, frame: ReceivedFrame) -> None:
        """Normalize one frame and hand its rows to the writers (waiting if they are full)."""
        received_s = trio.current_time()
        self.stats.frames_received[frame.feed] += 1
        if self.tap is not None:
            self.tap(frame)
        normalizer = self.normalizers.get(frame.feed)
        problem = frame.problem or self._oversized(frame)
        if problem is not None:
            kind, reason = problem
            letters: Sequence[DeadLetter] = (dead_letter(frame, [reason], kind),)
            rows: Sequence[Row] = ()
        elif normalizer is None:
            reason = f"no normalizer for feed {frame.feed!r}; known: {', '.join(sorted(self.normalizers))}"
            letters = (dead_letter(frame, [reason], "unknown_feed"),)
            rows = ()
        else:
            result = normalizer(frame)
            letters, rows = result.dead_letters, result.rows
        by_table: defaultdict[Table, list[Row]] = defaultdict(list)
        for row in rows:
            by_table[row.table].append(row)
        for table, table_rows in by_table.items():
            self.stats.rows_normalized[table] += len(table_rows)
            encoded = self.encode(table, table_rows)
            await self.channels[table].send(Delivery(frame.feed, table_rows, received_s, encoded))
        if letters:
            self.stats.frames_dead_lettered[frame.feed] += 1
            self.stats.rows_normalized[Table.DEAD_LETTERS] += len(letters)
            for letter in letters:
                self.stats.dead_letters_by_reason[(frame.feed, letter.kind)] += 1
            await self.channels[Table.DEAD_LETTERS].send(Delivery(frame.feed, letters, received_s))


@asynccontextmanager
async def open_pipeline(
    repository: Repository,
    normalizers: Mapping[str, Normalizer],
    config: PipelineConfig,
    stats: PipelineStats,
    clock: Clock,
    tap: FrameTap | None = None,
) -> AsyncIterator[Pipeline]:
    """Start one writer per table; on exit close the channels and wait for every writer to flush."""
    channels: dict[Table, trio.MemorySendChannel[Delivery]] = {}
    async with trio.open_nursery() as nursery:
        dead_send, dead_receive = trio.open_memory_channel[Delivery](config.channel_capacity)
        channels[Table.DEAD_LETTERS] = dead_send

        def writer(table: Table, dead_letters: trio.MemorySendChannel[Delivery] | None) -> TableWriter:
            return TableWriter(
                table,
                repository,
                config.batching,
                config.write_retry,
                stats,
                clock,
                dead_letters,
                in_thread=config.repository_in_thread,
                spool=DiskSpool(config.spool_dir, table).open() if config.spool_dir else None,
                buffer_max_rows=config.buffer_max_rows,
                concurrency=config.options_flow_writers if table is Table.OPTIONS_FLOW else 1,
            )

        nursery.start_soon(writer(Table.DEAD_LETTERS, None).run, dead_receive)
        for table in DATA_TABLES:
            send, receive = trio.open_memory_channel[Delivery](config.channel_capacity)
            channels[table] = send
            nursery.start_soon(writer(table, dead_send.clone()).run, receive)
        try:
            yield Pipeline(normalizers, channels, stats, repository.encode, tap, config.max_frame_bytes)
        finally:
            for channel in channels.values():
                channel.close()


async def run_feeds(feeds: Sequence[Feed], pipeline: Pipeline, restart: BackoffPolicy) -> None:
    """Run every feed under its own supervisor; return when all finite feeds have finished."""
    async with trio.open_nursery() as nursery:
        for feed in feeds:
            nursery.start_soon(
                functools.partial(
                    supervise_feed,
                    feed.name,
                    feed.run,
                    pipeline,
                    restart,
                    pipeline.stats,
                    restart_when_finished=not feed.finite,
                ),
                name=f"feed:{feed.name}",
            )


async def run_bridge(
    feeds: Sequence[Feed],
    repository: Repository,
    normalizers: Mapping[str, Normalizer],
    config: PipelineConfig,
    stats: PipelineStats,
    clock: Clock,
    wait_for_stop: Callable[[], Awaitable[None]],
    *,
    tap: FrameTap | None = None,
) -> bool:
    """Run until every feed finishes or a stop is requested; return whether every row was flushed.

    ``wait_for_stop`` returns once per stop request: the first stops the feeds and starts the
    grace period for flushing, a second one gives up flushing at once.
    """
    feeds_scope = trio.CancelScope()
    drain_scope = trio.CancelScope()

    async def stop_on_request() -> None:
        await wait_for_stop()
        log.info("stop requested: stopping feeds and flushing", grace_s=config.shutdown_grace_s)
        feeds_scope.cancel()
        drain_scope.deadline = trio.current_time() + config.shutdown_grace_s
        await wait_for_stop()
        log.warning("second stop request: abandoning the flush")
        drain_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_request)
        with drain_scope:
            async with open_pipeline(repository, normalizers, config, stats, clock, tap) as pipeline:
                with feeds_scope:
                    await run_feeds(feeds, pipeline, config.feed_restart)
                for feed in feeds:
                    if stats.feed_state.get(feed.name) != FeedState.FINISHED:
                        stats.feed_state[feed.name] = FeedState.STOPPED
        nursery.cancel_scope.cancel()
    flushed = not drain_scope.cancelled_caught or not stats.rows_lost_at_shutdown.total()
    if not flushed:
        pending = sum(stats.rows_normalized.values()) - sum(stats.rows_committed.values())
        log.error("shutdown grace expired before every row was written", rows_not_written=pending)
    return flushed
