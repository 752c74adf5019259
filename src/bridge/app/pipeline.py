"""The pipeline: feeds journal frames, one normalizer task per feed reads its journal, writers store rows.

``Pipeline.emit`` (the feeds' sink) only appends the frame to the journal. Each feed's normalizer
task reads that feed's journal from its checkpoint on, normalizes each frame (totally: a normalizer
cannot raise past its frame), stages its rows for their tables and hands them to one writer per
table; writers acknowledge each delivery once committed, which moves the journal's checkpoint.
Between socket and database every hand-off is bounded twice, by count (the channels) and by bytes
(a ``ByteBudget`` per table); when the writers cannot keep up, the normalizers fall behind the journal,
not the feeds: frames keep landing on disk, and are read back from there.

``run_bridge`` adds the feeds and the shutdown rule: on a stop request the feeds stop reading first,
then the journaled frames get the grace period to be normalized and committed; whatever is left is
on disk and is replayed at the next start.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from bridge.adapters.journal import DamagedRecord, FeedLog, Journal, JournalConfig, Record, open_journal
from bridge.app.backfill import backfillers_of, serve_backfills
from bridge.app.gaps import GapTracker
from bridge.app.leases import Lease, LeaseCoordinator
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import supervise_feed
from bridge.app.writer import ByteBudget, DeadLetterSender, Delivery, TableWriter
from bridge.domain.frames import dead_letter, normalize_totally, unexpected
from bridge.domain.gaps import GAPS_FEED, normalize_gap_frame
from bridge.domain.ids import stable_id
from bridge.domain.models import DATA_TABLES, DeadLetter, Normalized, ReceivedFrame, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import Clock, DataRejected, Feed, Normalizer, Repository, Staged, TableStore
from bridge.logs import get_logger

log = get_logger(__name__, component="pipeline")

FrameTap = Callable[[ReceivedFrame], None]
"""Sees every frame as it arrives (the recorder)."""

MIB = 1024 * 1024


@attrs.frozen
class PipelineConfig:
    batching: BatchPolicy = BatchPolicy()
    write_retry: BackoffPolicy = BackoffPolicy(initial_s=0.2, max_s=10.0)
    feed_restart: BackoffPolicy = BackoffPolicy()
    channel_capacity: int = 1024
    """Deliveries (one frame's rows for one table) waiting for a writer, at most."""
    channel_max_bytes: int = 32 * MIB
    """Bytes of staged rows waiting for each table's writer, at most."""
    shutdown_grace_s: float = 20.0
    max_frame_bytes: int = 16 * MIB
    options_flow_writers: int = 2
    """``options_flow`` batches committed at once: the database stores one while the next is gathered."""
    repository_in_thread: bool = True
    """False only for in-memory fakes, so tests on trio's virtual clock stay deterministic."""
    journal: JournalConfig = JournalConfig(directory=None)
    instance_id: str | None = None
    """This replica's name in the gap ledger (``BRIDGE_INSTANCE_ID``)."""


@attrs.define
class Pipeline:
    journal: Journal
    normalizers: Mapping[str, Normalizer]
    stores: Mapping[Table, TableStore]
    channels: Mapping[Table, trio.MemorySendChannel[Delivery]]
    budgets: Mapping[Table, ByteBudget]
    stats: PipelineStats
    clock: Clock
    tap: FrameTap | None = None
    max_frame_bytes: int = 16 * MIB
    draining: trio.Event = attrs.Factory(trio.Event)
    """Set once no more frames will come (shutdown, or every feed finished): writers stop lingering."""
    gaps: GapTracker | None = None
    abandoned: bool = False
    """Leave what is not committed in the journal at exit instead of waiting for it."""

    # -- the feeds' sink ----------------------------------------------------------------------------

    def connected(self, feed: str) -> None:
        self.stats.feed_state[feed] = FeedState.CONNECTED
        self.stats.feeds_ever_connected.add(feed)
        if self.gaps is not None and self.journal.paused is None:
            self.gaps.receiving(feed)

    def feed_stopped(self, feed: str, reason: str) -> None:
        """``feed`` stopped receiving (its connection failed, it is being stopped): a gap opens."""
        if self.gaps is not None:
            self.gaps.stopped(feed, reason)

    def _journal_paused(self, reason: str | None) -> None:
        if self.gaps is None:
            return
        for feed, state in self.stats.feed_state.items():
            if reason is not None:
                self.gaps.stopped(feed, reason)
            elif state is FeedState.CONNECTED:
                self.gaps.receiving(feed)

    async def emit(self, frame: ReceivedFrame) -> None:
        """Journal one received frame (waiting only while the journal is full)."""
        self.stats.frames_received[frame.feed] += 1
        if self.tap is not None:
            self.tap(frame)
        await self.journal.append(frame)

    # -- normalizing --------------------------------------------------------------------------------

    async def serve_normalizer(self, feed: str) -> None:
        """Read ``feed``'s journal forever: normalize each frame and hand its rows to the writers."""
        feed_log = self.journal.log_of(feed)
        reader = self.journal.reader(feed)
        while True:
            item = await reader.receive()
            if isinstance(item, DamagedRecord):
                await self._send(feed, None, Table.DEAD_LETTERS, [damaged_dead_letter(item, self.clock)])
                continue
            normalized = self._normalize(item.frame)
            if item.warmup:
                continue  # read for the normalizer's state (the NBBO book): its rows were stored before
            await self._hand_over(feed_log, item, normalized)

    def _normalize(self, frame: ReceivedFrame) -> Normalized:
        normalizer = self.normalizers.get(frame.feed)
        problem = frame.problem or self._oversized(frame)
        if problem is not None:
            kind, reason = problem
            return Normalized(dead_letters=(dead_letter(frame, [reason], kind),))
        if normalizer is None:
            reason = f"no normalizer for feed {frame.feed!r}; known: {', '.join(sorted(self.normalizers))}"
            return Normalized(dead_letters=(dead_letter(frame, [reason], "unknown_feed"),))
        return normalize_totally(normalizer, frame)

    def _oversized(self, frame: ReceivedFrame) -> tuple[str, str] | None:
        if len(frame.text) * 4 <= self.max_frame_bytes:  # cheap: a character is at most 4 bytes
            return None
        size = len(frame.text.encode("utf-8", errors="surrogatepass"))
        if size <= self.max_frame_bytes:
            return None
        return "oversized", f"frame of {size:,} bytes exceeds BRIDGE_MAX_FRAME_BYTES ({self.max_frame_bytes:,})"

    async def _hand_over(self, feed_log: FeedLog, record: Record, normalized: Normalized) -> None:
        frame = record.frame
        by_table: defaultdict[Table, list[Row]] = defaultdict(list)
        for row in normalized.rows:
            by_table[row.table].append(row)
        letters = list(normalized.dead_letters)
        staged: list[tuple[Table, Sequence[Row]]] = []
        for table, rows in by_table.items():
            self.stats.rows_normalized[table] += len(rows)
            staged.append((table, rows))
        if letters:
            self.stats.frames_dead_lettered[frame.feed] += 1
        deliveries: list[tuple[Table, Staged | None]] = [
            self._stage(frame, table, rows, letters) for table, rows in staged
        ]
        if letters:
            for letter in letters:
                self.stats.dead_letters_by_reason[(frame.feed, letter.kind)] += 1
            self.stats.rows_normalized[Table.DEAD_LETTERS] += len(letters)
            deliveries.append((Table.DEAD_LETTERS, self.stores[Table.DEAD_LETTERS].stage(letters)))
        ready = [(table, item) for table, item in deliveries if item is not None]
        feed_log.expect(record.seq, len(ready), frame.received_at)
        received_s = trio.current_time()
        for table, item in ready:
            delivery = Delivery(frame.feed, record.seq, item, received_s)
            await self.budgets[table].acquire(item.nbytes)
            await self.channels[table].send(delivery)

    def _stage(
        self, frame: ReceivedFrame, table: Table, rows: Sequence[Row], letters: list[DeadLetter]
    ) -> tuple[Table, Staged | None]:
        """Stage a frame's rows of one table; rows that cannot be staged join the frame's dead letters."""
        store = self.stores[table]
        try:
            return table, store.stage(rows)
        except DataRejected:
            pass
        except Exception as exc:  # a bug in the adapter's staging: those rows only
            log.exception("staging failed", feed=frame.feed, table=str(table))
            letters.append(dead_letter(frame, [f"writer_error: {unexpected(exc).split(': ', 1)[1]}"], "writer_error"))
            return table, None
        good: list[Row] = []
        for row in rows:  # find the rows that cannot be stored; the others go on
            try:
                store.stage([row])
            except DataRejected as exc:
                letters.append(dead_letter(frame, [f"{table} row refused: {exc}"], "unstorable_row"))
                continue
            good.append(row)
        if not good:
            return table, None
        return table, store.stage(good)

    async def _send(self, feed: str, seq: int | None, table: Table, rows: Sequence[Row]) -> None:
        staged = self.stores[table].stage(rows)
        await self.budgets[table].acquire(staged.nbytes)
        await self.channels[table].send(Delivery(feed, seq, staged))

    # -- acknowledgements -----------------------------------------------------------------------------

    def acknowledge(self, delivery: Delivery) -> None:
        if delivery.seq is not None:
            self.journal.log_of(delivery.feed).ack(delivery.seq)

    def more(self, delivery: Delivery) -> None:
        if delivery.seq is not None:
            self.journal.log_of(delivery.feed).add(delivery.seq)


def damaged_dead_letter(item: DamagedRecord, clock: Clock) -> DeadLetter:
    """A damaged journal record as a dead letter: where it was, why, and what could be read of it."""
    frame = ReceivedFrame(item.feed, clock(), item.text)
    reason = f"damaged journal record at {item.path}:{item.offset}: {item.reason}"
    letter = dead_letter(frame, [reason], "journal_damaged")
    return attrs.evolve(letter, id=stable_id("journal_damaged", str(item.path), str(item.offset), item.text))


@asynccontextmanager
async def open_pipeline(
    repository: Repository,
    normalizers: Mapping[str, Normalizer],
    config: PipelineConfig,
    stats: PipelineStats,
    clock: Clock,
    tap: FrameTap | None = None,
) -> AsyncIterator[Pipeline]:
    """Open the journal, start one writer per table and one normalizer per journaled feed.

    Leaving the block normally waits until every journaled frame is committed (bound it with a cancel
    scope: ``run_bridge`` does); leaving it by an exception or a cancellation leaves the rest in the
    journal for the next start.
    """
    async with open_journal(config.journal, stats, clock) as journal, trio.open_nursery() as nursery:
        stores = {table: repository.store(table) for table in (*DATA_TABLES, Table.DEAD_LETTERS, Table.FEED_GAPS)}
        channels: dict[Table, trio.MemorySendChannel[Delivery]] = {}
        receivers: dict[Table, trio.MemoryReceiveChannel[Delivery]] = {}
        budgets = {table: ByteBudget(config.channel_max_bytes) for table in stores}
        for table in stores:
            channels[table], receivers[table] = trio.open_memory_channel[Delivery](config.channel_capacity)
        gaps = GapTracker(journal, stats, clock, config.instance_id)
        gaps.load()
        normalizers = {**normalizers, GAPS_FEED: normalize_gap_frame}
        pipeline = Pipeline(
            journal, normalizers, stores, channels, budgets, stats, clock, tap, config.max_frame_bytes, gaps=gaps
        )
        journal.on_pause = pipeline._journal_paused
        dead_letters = DeadLetterSender(
            channels[Table.DEAD_LETTERS], stores[Table.DEAD_LETTERS], budgets[Table.DEAD_LETTERS], pipeline.more
        )
        for table, store in stores.items():
            writer = TableWriter(
                table,
                store,
                config.batching,
                config.write_retry,
                stats,
                clock,
                pipeline.acknowledge,
                budgets[table],
                None if table is Table.DEAD_LETTERS else dead_letters,
                in_thread=config.repository_in_thread,
                concurrency=config.options_flow_writers if table is Table.OPTIONS_FLOW else 1,
                stop_lingering=pipeline.draining,
            )
            nursery.start_soon(writer.run, receivers[table], name=f"writer:{table}")

        def start_normalizer(feed: str) -> None:
            nursery.start_soon(pipeline.serve_normalizer, feed, name=f"normalizer:{feed}")

        for feed in list(journal.logs):
            start_normalizer(feed)
        journal.new_feed = start_normalizer
        try:
            yield pipeline
            pipeline.draining.set()
            if not pipeline.abandoned:
                await journal.wait_done()
        finally:
            nursery.cancel_scope.cancel()


async def run_feeds(
    feeds: Sequence[Feed], pipeline: Pipeline, restart: BackoffPolicy, leases: LeaseCoordinator | None = None
) -> None:
    """Run every feed under its own supervisor, and the backfill of the gaps of those that have one;
    return when all finite feeds have finished.

    With ``leases``, each feed runs only while this process holds its lease (and its supervisor is
    told, so that no frame is journaled past the lease's deadline); a standby waits for the lease.
    """
    async with trio.open_nursery() as around:  # what serves the feeds: cancelled once they have finished
        if pipeline.gaps is not None and (backfillers := backfillers_of(feeds)):
            await around.start(serve_backfills, backfillers, pipeline.gaps, pipeline)
        if leases is not None:
            leases.gaps = pipeline.gaps  # the ledger lives with the pipeline: lease stops are its rows too
            around.start_soon(leases.serve_heartbeat, name="leases:heartbeat")
        async with trio.open_nursery() as nursery:
            for feed in feeds:
                supervise = functools.partial(
                    supervise_feed,
                    feed.name,
                    feed.run,
                    pipeline,
                    restart,
                    pipeline.stats,
                    restart_when_finished=not feed.finite,
                    on_stopped=pipeline.feed_stopped,
                )
                if leases is None:
                    nursery.start_soon(supervise, name=f"feed:{feed.name}")
                else:
                    nursery.start_soon(leases.run_leased, feed.name, _under_lease(supervise), name=f"feed:{feed.name}")
        around.cancel_scope.cancel()


def _under_lease(supervise: Callable[..., Awaitable[None]]) -> Callable[[Lease], Awaitable[None]]:
    async def run(lease: Lease) -> None:
        await supervise(lease_valid=lease.valid)

    return run


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
    leases: LeaseCoordinator | None = None,
) -> bool:
    """Run until every feed finishes or a stop is requested; return whether every frame was committed.

    ``wait_for_stop`` returns once per stop request: the first stops the feeds and starts the grace
    period, a second one gives up at once. Frames not committed by then stay in the journal.
    """
    feeds_scope = trio.CancelScope()
    drain_scope = trio.CancelScope()

    async def stop_on_request() -> None:
        await wait_for_stop()
        log.info("stop requested: stopping feeds and committing what they journaled", grace_s=config.shutdown_grace_s)
        feeds_scope.cancel()
        drain_scope.deadline = trio.current_time() + config.shutdown_grace_s
        await wait_for_stop()
        log.warning("second stop request: leaving the rest in the journal")
        drain_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_request)
        async with open_pipeline(repository, normalizers, config, stats, clock, tap) as pipeline:
            with feeds_scope:
                await run_feeds(feeds, pipeline, config.feed_restart, leases)
            for feed in feeds:
                if leases is not None and feed.name not in stats.feed_state:
                    continue  # a standby's feed: another replica runs it, this stop is no gap of it
                if stats.feed_state.get(feed.name) != FeedState.FINISHED:
                    stats.feed_state[feed.name] = FeedState.STOPPED
                    pipeline.feed_stopped(feed.name, "shutdown")
            pipeline.draining.set()
            with drain_scope:
                await pipeline.journal.wait_done()
            undone = pipeline.journal.undone_frames()
            pipeline.abandoned = True
        nursery.cancel_scope.cancel()
    if not undone:
        return True
    where = config.journal.directory
    if where is None:
        log.error("shutdown grace expired before every frame was committed", frames_not_committed=undone)
        return False
    # everything received is on disk: the journal is the buffer, and the next start commits the rest
    log.warning("frames not committed yet stay in the journal and are committed at the next start",
                frames=undone, journal=str(where))  # fmt: skip
    return True
