"""The ports: what the application needs from the outside world, as small protocols.

Adapters implement them (``bridge.adapters``); the in-memory fakes implement the same ones so the
application can be tested without I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import attrs

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


@attrs.frozen
class Staged:
    """Rows of one table prepared for ``TableStore.commit``: the rows and the adapter's own form of them.

    Staging happens on the event loop as each frame is normalized, while its rows are still in the
    CPU's caches (encoding them a batch later, in the writer, cost a quarter more: see ``bench/``);
    committing happens in a worker thread. ``payload`` is the adapter's business (a COPY payload, or
    nothing); ``nbytes`` is what the staged rows weigh, for the pipeline's byte bounds.
    """

    rows: Sequence[Row]
    payload: object = None
    nbytes: int = 0


class TransientWriteError(Exception):
    """The database could not take the batch now (connection lost, timeout, pool exhausted, shutdown,
    serialization failure, schema not there yet): the same batch is retried, with backoff."""


class TableStore(Protocol):
    """Where one table's rows go. Any exception but ``TransientWriteError`` and ``DataRejected`` is a bug."""

    def stage(self, rows: Sequence[Row]) -> Staged:
        """Prepare ``rows`` (on the event loop, cheap); ``DataRejected`` if they cannot be stored at all."""
        ...

    def commit(self, batch: Sequence[Staged]) -> int:
        """Store ``batch`` in one transaction, idempotently (called from a worker thread); return rows applied.

        Raises ``TransientWriteError`` when the database could not take it, ``DataRejected`` when the
        content is refused (the caller splits the batch to find the rows).
        """
        ...


class Repository(Protocol):
    """The database: a store per table, plus what readiness and summaries need."""

    def store(self, table: Table) -> TableStore: ...

    def count_rows(self) -> Mapping[Table, int]:
        """Rows currently stored per table (for summaries and reconciliation)."""
        ...

    def ping(self) -> None:
        """Return when the database answers; raise when it does not (readiness)."""
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
