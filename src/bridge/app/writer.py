"""One writer per table: takes deliveries off its channel in batches and commits them.

Group commit: a writer with no write in flight writes at once whatever is waiting (up to
``max_rows``); rows that arrive while a write is in flight wait for the next one, so batches grow
with the load and latency stays one write long. Failures come in three kinds, told apart by the
storage adapter:

- ``TransientWriteError``: the database cannot take it now. The same batch is retried with backoff,
  for as long as it takes (the journal holds everything meanwhile); ``/readyz`` reports a writer
  stuck on one batch.
- ``DataRejected``: the content is refused. The batch is split in halves until each refused row
  stands alone; those become dead letters with the database's reason, the rest lands.
- anything else is a bug: the batch is dead-lettered with ``writer_error: <Type>: <message>`` and
  logged with its traceback, never retried forever.

Every delivery is acknowledged once its rows are committed or dead-lettered; the journal's
checkpoint moves on those acknowledgements.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence

import attrs
import orjson
import trio
from trio_util import AsyncValue, move_on_when

from bridge.app.stats import PipelineStats
from bridge.domain.frames import MAX_STORED_CHARS
from bridge.domain.ids import stable_id
from bridge.domain.models import DeadLetter, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import Clock, DataRejected, Staged, TableStore, TransientWriteError
from bridge.logs import get_logger

log = get_logger(__name__)

WRITER_ERROR = "writer_error"


@attrs.frozen
class Delivery:
    """The rows one frame of one feed produced for one table, staged, and which journal record it was."""

    feed: str
    seq: int | None
    """The frame's journal seq (acknowledged once committed); ``None`` for dead letters of damaged records."""
    staged: Staged
    received_s: float | None = None
    """trio's clock when the frame was received (live frames only): received → committed latency."""

    @property
    def rows(self) -> Sequence[Row]:
        return self.staged.rows


@attrs.define
class ByteBudget:
    """A bound in bytes on what waits between the normalizers and a writer (its channel bounds the count).

    One delivery larger than the whole budget still passes, alone, so nothing can wedge.
    """

    limit: int
    used: AsyncValue[int] = attrs.Factory(lambda: AsyncValue(0))

    async def acquire(self, nbytes: int) -> None:
        limit = self.limit
        await self.used.wait_value(lambda used: used == 0 or used + nbytes <= limit)
        self.used.value += nbytes

    def release(self, nbytes: int) -> None:
        self.used.value -= nbytes


Acknowledge = Callable[[Delivery], None]
"""Called once a delivery's rows are committed or dead-lettered."""


@attrs.define
class TableWriter:
    table: Table
    store: TableStore
    batching: BatchPolicy
    retry: BackoffPolicy
    stats: PipelineStats
    clock: Clock
    acknowledge: Acknowledge
    budget: ByteBudget
    dead_letters: DeadLetterSender | None = None
    """Where rows the database refuses go; ``None`` for the dead-letter writer itself."""
    in_thread: bool = True
    """Commit from a worker thread; unit tests with in-memory fakes commit inline (deterministic clocks)."""
    concurrency: int = 1
    """Batches committed at once (each on its own connection): above 1 only for tables whose writes do
    not depend on their order (``options_flow``: insert-only with deterministic ids)."""
    stop_lingering: trio.Event = attrs.Factory(trio.Event)
    """Set when the pipeline drains (shutdown): batches are written at once, without lingering."""
    rng: Callable[[], float] = random.random
    limiter: trio.CapacityLimiter = attrs.Factory(lambda self: trio.CapacityLimiter(self.concurrency), takes_self=True)
    """Its own threads: a hung database holds this writer's tokens only, never readiness probes'."""
    _failing_since: dict[int, float] = attrs.Factory(dict)

    async def run(self, receive: trio.MemoryReceiveChannel[Delivery]) -> None:
        """Commit batches until the channel closes (``concurrency`` committers share it)."""
        async with trio.open_nursery() as nursery:
            for worker in range(self.concurrency):
                nursery.start_soon(self._serve, receive, worker)

    async def _serve(self, receive: trio.MemoryReceiveChannel[Delivery], worker: int) -> None:
        async for first in receive:
            await self.write(await self._gather(receive, first), worker)

    async def _gather(self, receive: trio.MemoryReceiveChannel[Delivery], first: Delivery) -> list[Delivery]:
        """``first`` and whatever else is waiting, up to ``max_rows``; lingering ``max_ms`` only if set."""
        batch, size = [first], len(first.rows)
        linger_until = trio.current_time() + self.batching.max_wait_s
        while size < self.batching.max_rows:
            try:
                delivery: Delivery | None = receive.receive_nowait()
            except trio.WouldBlock:
                if self.batching.max_wait_s <= 0 or self.stop_lingering.is_set():
                    break
                delivery = None
                with trio.move_on_at(linger_until):
                    async with move_on_when(self.stop_lingering.wait):
                        with contextlib.suppress(trio.EndOfChannel):
                            delivery = await receive.receive()
            except trio.EndOfChannel:
                break
            if delivery is None:
                break
            batch.append(delivery)
            size += len(delivery.rows)
        return batch

    async def write(self, batch: list[Delivery], worker: int = 0) -> None:
        """Commit one batch (retrying while the database is away), then acknowledge every delivery."""
        try:
            await self._commit_until_done([d.staged for d in batch], worker)
        except DataRejected:
            await self._isolate_rejected(batch, worker)
        except Exception as exc:  # a bug, not the database: dead-letter the batch, never retry it forever
            rows = sum(len(d.rows) for d in batch)
            log.exception("writer bug: the batch is dead-lettered", table=str(self.table), rows=rows)
            await self._dead_letter(batch, f"{WRITER_ERROR}: {type(exc).__name__}: {exc}", WRITER_ERROR)
        now = trio.current_time()
        for delivery in batch:
            if delivery.received_s is not None:
                self.stats.commit_latency_s.observe(now - delivery.received_s, times=len(delivery.rows))
            self.budget.release(delivery.staged.nbytes)
            self.acknowledge(delivery)

    async def _commit_until_done(self, batch: Sequence[Staged], worker: int) -> None:
        attempt = 0
        rows = sum(len(staged.rows) for staged in batch)
        while True:
            started = trio.current_time()
            try:
                if self.in_thread:
                    # abandoned on cancel (shutdown): the frames are not acknowledged, so they stay in the journal;
                    # a commit that lands after all is one the replay then writes nothing twice for
                    written = await trio.to_thread.run_sync(
                        self.store.commit, batch, limiter=self.limiter, abandon_on_cancel=True
                    )
                else:
                    await trio.lowlevel.checkpoint()
                    written = self.store.commit(batch)
            except TransientWriteError as exc:
                self.stats.write_failures[self.table] += 1
                first = self._failing_since.setdefault(worker, started)
                self.stats.write_retrying_since[self.table] = min(self._failing_since.values())
                delay = self.retry.delay(attempt, self.rng)
                attempt += 1
                log.warning(
                    "write failed; retrying",
                    table=str(self.table),
                    rows=rows,
                    error=str(exc),
                    retry_in_s=round(delay, 3),
                    retrying_for_s=round(started - first, 1),
                )
                await trio.sleep(delay)
                continue
            self._failing_since.pop(worker, None)
            if self._failing_since:
                self.stats.write_retrying_since[self.table] = min(self._failing_since.values())
            else:
                self.stats.write_retrying_since.pop(self.table, None)
            self.stats.write_seconds[self.table].observe(trio.current_time() - started)
            self.stats.batch_rows[self.table].observe(rows)
            self.stats.rows_committed[self.table] += rows
            self.stats.rows_written[self.table] += written
            self.stats.last_commit_s = trio.current_time()
            return

    async def _isolate_rejected(self, batch: list[Delivery], worker: int) -> None:
        """Split until every refused row stands alone; commit the rest."""
        pending: list[list[tuple[Delivery, Row]]] = [[(d, row) for d in batch for row in d.rows]]
        while pending:
            part = pending.pop()
            try:
                await self._commit_until_done([self.store.stage([row for _, row in part])], worker)
            except DataRejected as exc:
                if len(part) > 1:
                    middle = len(part) // 2
                    pending += [part[middle:], part[:middle]]
                    continue
                delivery, row = part[0]
                self.stats.rows_rejected_by_database[self.table] += 1
                reason = f"the database refused this {self.table} row: {first_line(str(exc))}"
                await self._dead_letter_rows(delivery, [row], reason, "rejected_by_database")

    async def _dead_letter(self, batch: Sequence[Delivery], reason: str, kind: str) -> None:
        for delivery in batch:
            await self._dead_letter_rows(delivery, delivery.rows, reason, kind)

    async def _dead_letter_rows(self, delivery: Delivery, rows: Sequence[Row], reason: str, kind: str) -> None:
        self.stats.dead_letters_by_reason[(delivery.feed, kind)] += len(rows)
        if self.dead_letters is None:  # the dead-letter table itself: nowhere further to go
            log.error("a dead letter could not be stored", feed=delivery.feed, reason=reason, rows=len(rows))
            return
        letters = [row_dead_letter(self.table, delivery.feed, row, reason, kind, self.clock) for row in rows]
        log.warning("rows dead-lettered", feed=delivery.feed, table=str(self.table), reason=reason, rows=len(rows))
        await self.dead_letters.send(delivery, letters)


def first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else "(no reason given)"


def row_dead_letter(table: Table, feed: str, row: Row, reason: str, kind: str, clock: Clock) -> DeadLetter:
    """A row that could not be stored, as a dead letter holding the row as JSON (bounded, never raising)."""
    try:
        fields = attrs.asdict(row, recurse=True)
        if type(fields.get("raw")) is str:  # a RawJson: JSON text already, kept as the object it is
            fields["raw"] = orjson.Fragment(fields["raw"])
        text = orjson.dumps(fields, default=str).decode()
    except Exception as exc:  # the row itself cannot be encoded (that may be why it is here)
        text = f"(row not encodable as JSON: {type(exc).__name__}: {exc}) {row!r}"
    length = len(text)
    digest = stable_id("rejected_row", table, text)
    if length > MAX_STORED_CHARS:
        text = text[:MAX_STORED_CHARS]
    return DeadLetter(
        id=digest,
        feed=feed,
        received_at=getattr(row, "received_at", None) or clock(),
        reason=reason,
        frame=text.replace("\x00", "\\u0000"),
        kind=kind,
        frame_length=length,
    )


class DeadLetterSender:
    """Sends dead letters made by a writer to the dead-letter writer, tied to the frame they came from."""

    def __init__(
        self,
        channel: trio.MemorySendChannel[Delivery],
        store: TableStore,
        budget: ByteBudget,
        more: Callable[[Delivery], None],
    ) -> None:
        self.channel, self.store, self.budget, self.more = channel, store, budget, more

    async def send(self, origin: Delivery, letters: Sequence[DeadLetter]) -> None:
        staged = self.store.stage(letters)
        delivery = Delivery(origin.feed, origin.seq, staged, origin.received_s)
        self.more(delivery)  # the frame is done only once these are committed too
        await self.budget.acquire(staged.nbytes)
        await self.channel.send(delivery)
