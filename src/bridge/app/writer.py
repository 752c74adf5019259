"""One writer per table: gathers rows into batches by size and time and stores them.

A batch is retried with backoff while the database fails; rows whose content the database
refuses are isolated by splitting the batch in halves, so the good rows land and each bad one
becomes a dead letter with the database's reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import attrs
import orjson
import trio

from bridge.app.stats import PipelineStats
from bridge.domain.ids import stable_id
from bridge.domain.models import DeadLetter, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import Clock, DataRejected, Repository
from bridge.logs import get_logger

log = get_logger(__name__)


@attrs.frozen
class Delivery:
    """The rows one frame of one feed produced for one table, and when the frame arrived."""

    feed: str
    rows: Sequence[Row]
    received_s: float = attrs.field(factory=trio.current_time)
    """trio's clock when the frame was received: received → committed latency is measured from here."""


@attrs.frozen
class Batch:
    deliveries: list[Delivery]
    ended: bool
    """The channel is closed and drained: this is the writer's last batch."""


async def collect_batch(receive: trio.MemoryReceiveChannel[Delivery], policy: BatchPolicy) -> Batch:
    """Wait for a first delivery, then take more until ``max_rows`` or ``max_ms`` after the first."""
    deliveries: list[Delivery] = []
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

    async def run(self, receive: trio.MemoryReceiveChannel[Delivery]) -> None:
        """Write batches until the channel is closed and drained, then return."""
        async with receive:
            try:
                while True:
                    batch = await collect_batch(receive, self.batching)
                    if batch.deliveries:
                        await self.write(batch.deliveries)
                    if batch.ended:
                        return
            finally:
                if self.dead_letters is not None:
                    self.dead_letters.close()

    async def write(self, deliveries: list[Delivery]) -> None:
        rows = [row for delivery in deliveries for row in delivery.rows]
        try:
            await self._write_with_retry(rows)
        except DataRejected:
            await self._isolate_rejected(deliveries)
        now = trio.current_time()
        for delivery in deliveries:
            self.stats.commit_latency_s.observe(now - delivery.received_s, times=len(delivery.rows))

    async def _write_with_retry(self, rows: Sequence[Row]) -> None:
        attempt = 0
        while True:
            try:
                started = trio.current_time()
                if self.in_thread:
                    written = await trio.to_thread.run_sync(self.repository.write, self.table, rows)
                else:
                    await trio.lowlevel.checkpoint()
                    written = self.repository.write(self.table, rows)
                self.stats.write_seconds[self.table].observe(trio.current_time() - started)
                self.stats.batch_rows[self.table].observe(len(rows))
            except DataRejected:
                raise
            except Exception as exc:  # the database is down or failing: keep the rows and retry
                self.stats.write_failures[self.table] += 1
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
        text = orjson.dumps(attrs.asdict(row, recurse=True), default=str).decode()
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
