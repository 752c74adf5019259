"""The ports: what the application needs from the outside world, as small protocols.

Adapters implement them (``bridge.adapters``); the in-memory fakes implement the same ones so the
application can be tested without I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from bridge.domain.models import Normalized, ReceivedFrame, Row, Table

Clock = Callable[[], datetime]
"""Wall-clock time as an aware UTC datetime (stamps ``received_at``)."""


class DataRejected(Exception):
    """The database refused the content of the rows (a check, a type, a constraint).

    Retrying the same rows cannot succeed; the writer isolates the offending row instead.
    """


class RetryLater(Exception):
    """The source refused us in a way that retrying soon cannot fix (e.g. credentials rejected).

    The supervisor waits at least ``retry_after_s`` before the next attempt instead of its usual
    backoff, so a wrong key is reported clearly and does not become a hot reconnect loop.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FrameSink(Protocol):
    """Where a feed delivers what it receives."""

    async def emit(self, frame: ReceivedFrame) -> None:
        """Hand one received frame on; awaiting it is the feed's backpressure."""
        ...

    def connected(self, feed: str) -> None:
        """The feed's connection is up (authenticated and subscribed, where the protocol has that)."""
        ...


class Repository(Protocol):
    """Stores batches of rows. Synchronous: the application calls ``write`` from a worker thread."""

    def encode(self, table: Table, rows: Sequence[Row]) -> bytes | None:
        """``rows`` (all of ``table``) in the form ``write`` sends them, or ``None`` if it sends none.

        The pipeline calls it for each frame's rows as they are made, while they are still in the
        CPU's caches, and gives the result back to ``write`` with the batch: encoding rows made tens
        of milliseconds earlier, in the writer, cost a quarter more (measured in ``bench/``).
        """
        ...

    def write(self, table: Table, rows: Sequence[Row], encoded: Sequence[bytes] | None = None) -> int:
        """Write ``rows`` (all of ``table``) in one transaction, idempotently; return rows applied.

        ``encoded``, when given, is ``encode`` of ``rows`` in consecutive parts, in order.
        Raises ``DataRejected`` when the rows' content is refused, any other exception when the
        database could not be reached or failed (the caller retries those).
        """
        ...

    def count_rows(self) -> Mapping[Table, int]:
        """Rows currently stored per table (for summaries and reconciliation)."""
        ...

    def ping(self) -> None:
        """Return when the database answers; raise when it does not (readiness)."""
        ...


class Spool(Protocol):
    """Batches of one table kept on disk while the database cannot take them; oldest first.

    Synchronous (it fsyncs): the application calls it from a worker thread.
    """

    @property
    def records(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def head_seq(self) -> int | None:
        """The sequence number of the oldest batch, if any."""
        ...

    def append(self, seq: int, parts: Sequence[tuple[str, Sequence[Row]]]) -> None:
        """Add a batch, made of the rows each feed contributed; durable when this returns."""
        ...

    def peek(self) -> tuple[int, list[tuple[str, list[Row]]]] | None:
        """The oldest batch without consuming it."""
        ...

    def pop(self) -> None:
        """Consume the oldest batch (it is in the database)."""
        ...


class Feed(Protocol):
    """A source of frames: a live WebSocket stream or a recording."""

    @property
    def name(self) -> str: ...

    @property
    def finite(self) -> bool:
        """A recording ends and is done; a live stream that ends is reconnected."""
        ...

    async def run(self, sink: FrameSink) -> None:
        """Receive frames and emit each one to ``sink``, in order, until the source ends or fails.

        A live feed never returns on its own; it raises when its connection fails and the
        supervisor restarts it. A recording returns when it has been read to the end.
        """
        ...


class Normalizer(Protocol):
    """Turns one frame of a protocol into rows and dead letters. Pure, or with in-memory state only."""

    def __call__(self, frame: ReceivedFrame) -> Normalized: ...
