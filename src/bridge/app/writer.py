"""One writer per table: gathers rows into batches by size and time and stores them.

A batch is retried with backoff while the database fails; rows whose content the database
refuses are isolated by splitting the batch in halves, so the good rows land and each bad one
becomes a dead letter with the database's reason.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import orjson
import trio

from bridge.app.stats import PipelineStats
from bridge.domain.ids import stable_id
from bridge.domain.models import DeadLetter, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import Clock, DataRejected, Repository, Spool
from bridge.logs import get_logger

log = get_logger(__name__)
_T = TypeVar("_T")


@attrs.frozen
class Delivery:
    """The rows one frame of one feed produced for one table, and when the frame arrived."""

    feed: str
    rows: Sequence[Row]
    received_s: float = attrs.field(factory=trio.current_time)
    """trio's clock when the frame was received: received → committed latency is measured from here."""
    encoded: bytes | None = None
    """``Repository.encode`` of ``rows``, when the repository encodes (not kept in the spool)."""


@attrs.frozen
class Batch:
    deliveries: list[Delivery]
    ended: bool
    """The channel is closed and drained: this is the writer's last batch."""


async def collect_batch(
    receive: trio.MemoryReceiveChannel[Delivery], policy: BatchPolicy, deliveries: list[Delivery] | None = None
) -> Batch:
    """Wait for a first delivery, then take more until ``max_rows`` or ``max_ms`` after the first.

    Deliveries are gathered into ``deliveries`` (the caller's list), so a cancellation in the middle
    leaves what was already taken off the channel where the caller can still save it.
    """
    deliveries = [] if deliveries is None else deliveries
    try:
        deliveries.append(await receive.receive())
        size = len(deliveries[0].rows)
        with trio.move_on_after(policy.max_wait_s):
            while size < policy.max_rows:
                try:
                    delivery = receive.receive_nowait()  # fast path: no scheduling while rows are waiting
                except trio.WouldBlock:
                    delivery = await receive.receive()
                deliveries.append(delivery)
                size += len(delivery.rows)
    except trio.EndOfChannel:
        return Batch(deliveries, ended=True)
    return Batch(deliveries, ended=False)


@attrs.define
class TableWriter:
    table: Table
    repository: Repository
    batching: BatchPolicy
    retry: BackoffPolicy
    stats: PipelineStats
    clock: Clock
    dead_letters: trio.MemorySendChannel[Delivery] | None
    """Where rows the database rejects go; ``None`` for the dead-letter writer itself."""
    in_thread: bool = True
    """Call the (synchronous) repository from a worker thread; unit tests with fakes call it inline."""
    rng: Callable[[], float] = random.random

    spool: Spool | None = None
    """Where batches go beyond ``buffer_max_rows`` (and at shutdown, when the database is down)."""
    buffer_max_rows: int = 25_000
    concurrency: int = 1
    """Batches written at once (each on its own connection). Above 1 only for tables whose writes do
    not depend on their order (``options_flow``: insert-only with deterministic ids), so that the
    database works on one batch while the next one is being encoded."""
    _memory: deque[tuple[int, list[Delivery]]] = attrs.field(factory=deque, init=False)
    _memory_rows: int = attrs.field(default=0, init=False)
    _sequence: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _receiving: bool = attrs.field(default=True, init=False)
    _spool_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    _collecting: list[Delivery] = attrs.field(factory=list, init=False)
    """The batch being gathered: off the channel, not yet queued."""
    _claimed: set[int] = attrs.field(factory=set, init=False)
    """Batches a flusher is writing (``-1``: the spool's head, being read)."""
    _failing: bool = attrs.field(default=False, init=False)
    """The last write attempt failed (the database is down or refusing): overflow goes to the spool."""

    async def run(self, receive: trio.MemoryReceiveChannel[Delivery]) -> None:
        """Take batches off the channel while another task writes them; return when all are written.

        Batches queue in memory up to ``buffer_max_rows``. Beyond that, while the database is
        failing, they go to the disk spool (oldest first, so the order of writes is kept) and the
        feeds are never held back; while the database is up and merely behind, the receiver waits
        instead, which holds the feeds back. Spooling then would only add disk work to a process
        that is already short of CPU or of database throughput, so it would fall further behind
        (measured in ``bench/``). Without a spool the receiver always waits. Cancelled (the
        shutdown grace expired), it spools what it still holds.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flush_all)
                while True:
                    batch = await collect_batch(receive, self.batching, self._collecting)
                    if batch.deliveries:
                        await self._enqueue(list(batch.deliveries))
                    self._collecting.clear()
                    if batch.ended:
                        break
                self._receiving = False
                self._notify()
        finally:
            # the channel stays open until here: closing it would discard what it still buffers
            with trio.CancelScope(shield=True):
                await self._spool_leftovers(receive)
            receive.close()
            if self.dead_letters is not None:
                self.dead_letters.close()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _on_spool(self, method: Callable[..., _T], *args: object) -> _T:
        """Run a spool operation (blocking disk I/O) off the event loop; callers hold ``_spool_lock``."""
        if not self.in_thread:
            await trio.lowlevel.checkpoint()
            return method(*args)
        return await trio.to_thread.run_sync(method, *args)

    async def _enqueue(self, deliveries: list[Delivery]) -> None:
        rows = sum(len(delivery.rows) for delivery in deliveries)
        seq = next(self._sequence)
        # hold the feeds back until the writer catches up, unless the database is down and there is a spool
        while (
            self._memory
            and self._memory_rows + rows > self.buffer_max_rows
            and (self.spool is None or not self._failing)
            and not (self.spool is not None and self.spool.records)
        ):
            await self._changed.wait()
        if self.spool is not None and (self.spool.records or self._memory_rows + rows > self.buffer_max_rows):
            async with self._spool_lock:
                await self._spill()
                await self._on_spool(self.spool.append, seq, [(d.feed, d.rows) for d in deliveries])
            self.stats.spool_bytes[self.table] = self.spool.bytes
            self._notify()
            return
        self._memory.append((seq, deliveries))
        self._memory_rows += rows
        self.stats.buffer_rows[self.table] = self._memory_rows
        self._notify()

    async def _spill(self) -> None:
        """Move every batch held in memory to the spool, oldest first (caller holds ``_spool_lock``).

        Memory is emptied only once all of it is on disk, and the flusher removes a written batch
        under the same lock, so a batch is never lost or removed twice.
        """
        assert self.spool is not None
        for seq, deliveries in list(self._memory):
            await self._on_spool(self.spool.append, seq, [(d.feed, d.rows) for d in deliveries])
        self._memory.clear()
        self._memory_rows = 0
        self.stats.buffer_rows[self.table] = 0
        self.stats.spool_bytes[self.table] = self.spool.bytes

    def _next_batch(self) -> tuple[int, list[Delivery] | None] | None:
        """The oldest batch no flusher holds: from memory, else the spool's head (``None`` rows: read it)."""
        for seq, deliveries in self._memory:
            if seq not in self._claimed:
                return seq, deliveries
        if not self._memory and self.spool is not None and self.spool.records and not self._claimed:
            return -1, None  # the spool is drained by one flusher at a time, in order
        return None

    async def _take(self) -> tuple[int, list[Delivery], bool] | None:
        """Claim the next batch to write: (seq, deliveries, read from the spool); ``None`` when
        there is nothing left and nothing more will come."""
        while True:
            chosen = self._next_batch()
            if chosen is not None:
                seq, deliveries = chosen
                if deliveries is not None:
                    self._claimed.add(seq)
                    return seq, deliveries, False
                self._claimed.add(-1)
                try:
                    async with self._spool_lock:
                        spooled = await self._on_spool(self.spool.peek) if self.spool is not None else None
                finally:
                    self._claimed.discard(-1)
                if spooled is not None:
                    seq, parts = spooled
                    self._claimed.add(seq)
                    return seq, [Delivery(feed, rows) for feed, rows in parts], True
                continue
            if not self._receiving and not self._claimed:
                return None
            await self._changed.wait()

    async def _remove(self, seq: int, spooled: bool) -> None:
        """The batch ``seq`` is in the database: drop it from wherever it is now (memory or spool).

        A batch taken from memory may have been spilled to the spool meanwhile (the database failed
        under another flusher): it is then the spool's to replay, which writes nothing twice.
        """
        async with self._spool_lock:
            if not spooled:
                for index, (held, deliveries) in enumerate(self._memory):
                    if held == seq:
                        del self._memory[index]
                        self._memory_rows -= sum(len(d.rows) for d in deliveries)
                        self.stats.buffer_rows[self.table] = self._memory_rows
                        return
            if self.spool is not None and self.spool.head_seq == seq:
                await self._on_spool(self.spool.pop)
                self.stats.spool_bytes[self.table] = self.spool.bytes

    async def _flush_all(self) -> None:
        """Write batches until receiving ended and all is written: ``concurrency`` at a time, oldest first."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._flush)

    async def _flush(self) -> None:
        while (taken := await self._take()) is not None:
            seq, deliveries, spooled = taken
            try:
                await self.write(deliveries)
                await self._remove(seq, spooled)
            finally:
                self._claimed.discard(seq)
                self._notify()

    async def _spool_leftovers(self, receive: trio.MemoryReceiveChannel[Delivery]) -> None:
        """After a cancellation: whatever is still in memory or in the channel goes to the spool."""
        leftovers: list[Delivery] = list(self._collecting)
        self._collecting.clear()
        while True:
            try:
                leftovers.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        pending = self._memory_rows + sum(len(d.rows) for d in leftovers)
        if not pending:
            return
        if self.spool is None:
            self.stats.rows_lost_at_shutdown[self.table] += pending
            log.error("rows not written at shutdown and no spool to keep them", table=str(self.table), rows=pending)
            return
        with trio.move_on_after(10):
            async with self._spool_lock:
                await self._spill()
                if leftovers:
                    parts = [(d.feed, d.rows) for d in leftovers]
                    await self._on_spool(self.spool.append, next(self._sequence), parts)
            self.stats.spool_bytes[self.table] = self.spool.bytes
            log.warning("the database did not take every row before shutdown; spooled", table=str(self.table),
                        rows=pending, spool_bytes=self.spool.bytes)  # fmt: skip
            return
        self.stats.rows_lost_at_shutdown[self.table] += pending

    async def write(self, deliveries: list[Delivery]) -> None:
        rows = [row for delivery in deliveries for row in delivery.rows]
        encoded = [delivery.encoded for delivery in deliveries]
        try:
            await self._write_with_retry(rows, encoded if None not in encoded else None)  # type: ignore[arg-type]
        except DataRejected:
            await self._isolate_rejected(deliveries)
        now = trio.current_time()
        for delivery in deliveries:
            self.stats.commit_latency_s.observe(now - delivery.received_s, times=len(delivery.rows))

    async def _write_with_retry(self, rows: Sequence[Row], encoded: Sequence[bytes] | None = None) -> None:
        attempt = 0
        while True:
            try:
                started = trio.current_time()
                if self.in_thread:
                    # abandoned on cancel (shutdown grace): the batch is then spooled; if the thread's
                    # write commits after all, replaying it from the spool writes nothing twice
                    written = await trio.to_thread.run_sync(
                        self.repository.write, self.table, rows, encoded, abandon_on_cancel=True
                    )
                else:
                    await trio.lowlevel.checkpoint()
                    written = self.repository.write(self.table, rows, encoded)
                self.stats.write_seconds[self.table].observe(trio.current_time() - started)
                self.stats.batch_rows[self.table].observe(len(rows))
            except DataRejected:
                raise
            except Exception as exc:  # the database is down or failing: keep the rows and retry
                self.stats.write_failures[self.table] += 1
                if not self._failing:
                    self._failing = True
                    self._notify()  # a receiver held back may now spool instead
                delay = self.retry.delay(attempt, self.rng)
                attempt += 1
                log.warning(
                    "write failed; retrying",
                    table=str(self.table),
                    rows=len(rows),
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await trio.sleep(delay)
            else:
                self._failing = False
                self.stats.rows_committed[self.table] += len(rows)
                self.stats.last_commit_s = trio.current_time()
                self.stats.rows_written[self.table] += written
                return

    async def _isolate_rejected(self, deliveries: list[Delivery]) -> None:
        """Split until every rejected row stands alone; write the rest normally."""
        pending: list[list[tuple[str, Row]]] = [[(d.feed, row) for d in deliveries for row in d.rows]]
        while pending:
            part = pending.pop()
            try:
                await self._write_with_retry([row for _, row in part])
            except DataRejected as exc:
                if len(part) > 1:
                    middle = len(part) // 2
                    pending += [part[middle:], part[:middle]]
                else:
                    await self._reject(*part[0], reason=str(exc))

    async def _reject(self, feed: str, row: Row, reason: str) -> None:
        self.stats.rows_rejected_by_database[self.table] += 1
        self.stats.dead_letters_by_reason[(feed, "rejected_by_database")] += 1
        if self.dead_letters is None:
            log.error("the database refused a dead letter", feed=feed, reason=reason)
            return
        fields = attrs.asdict(row, recurse=True)
        if type(fields.get("raw")) is str:  # a RawJson: JSON text already, kept as the object it is
            fields["raw"] = orjson.Fragment(fields["raw"])
        text = orjson.dumps(fields, default=str).decode()
        letter = DeadLetter(
            id=stable_id("rejected_row", self.table, text),
            feed=feed,
            received_at=getattr(row, "received_at", None) or self.clock(),
            reason=f"the database refused this {self.table} row: {reason.strip().splitlines()[0]}",
            frame=text,
            kind="rejected_by_database",
        )
        log.warning("row rejected by the database", feed=feed, table=str(self.table), reason=letter.reason)
        await self.dead_letters.send(Delivery(feed, (letter,)))
