"""Keeps one feed running: restarts it after a failure, with a backoff that grows only while it achieves nothing.

Each attempt is started with ``nursery.start``: the feed is "connected" when its sink's
``connected`` is called (the WebSocket session does so once its hello has finished), which here
becomes ``task_status.started()``. The supervisor counts the frames the feed emits after that: an
attempt that delivered any was productive, and the next one starts at once (see
``BackoffPolicy.after``). Each feed runs in its own nursery, so one failing (or being restarted)
never disturbs its siblings; cancellation of the surrounding scope is the only way to stop it.

Under a lease (``bridge.app.leases``) the supervisor is handed ``lease_valid``, checked before each
frame goes on: past the lease's local deadline no frame is passed on, even one the socket delivered
before the cancellation (whose deadline is the same instant) reached the feed.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.models import ReceivedFrame
from bridge.domain.policies import Attempt, BackoffPolicy
from bridge.domain.ports import FrameSink, RetryLater
from bridge.logs import REDACTOR, get_logger

log = get_logger(__name__)

FeedRun = Callable[[FrameSink], Awaitable[None]]
"""One attempt of a feed: receives into the sink until its source ends (returns) or fails (raises)."""


def _innermost(exc: BaseException) -> BaseException:
    """A feed with tasks of its own fails with a one-exception group: report the exception inside."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.define
class AttemptSink:
    """The sink one attempt writes to: passes everything on, and notes readiness and delivery.

    The first ``connected`` calls ``task_status.started()``; later ones (a feed that reports its
    REST snapshot, then its stream) are passed on only. Frames emitted before it (the hello's
    status frames) do not make the attempt productive; frames after it do, except those the
    transport already marked unusable (``problem``): a server that sends only an oversized message
    on every connection must back off, not be reconnected at once forever.
    """

    inner: FrameSink
    task_status: trio.TaskStatus[None]
    lease_valid: Callable[[], bool] | None = None
    connected_at: float | None = None
    frames_after_connected: int = 0
    _started: bool = False

    def connected(self, feed: str) -> None:
        if self.connected_at is None:
            self.connected_at = trio.current_time()
        self.inner.connected(feed)
        self.ensure_started()

    async def emit(self, frame: ReceivedFrame) -> None:
        if self.lease_valid is not None and not self.lease_valid():
            # the lease's deadline has passed (a frozen process just resumed): this frame is not ours to
            # keep, and the scope whose deadline is that same instant cancels this wait
            await trio.sleep_forever()
        await self.inner.emit(frame)
        if self.connected_at is not None and frame.problem is None:
            self.frames_after_connected += 1

    def ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self.task_status.started()


async def _attempt_task(run: FeedRun, sink: AttemptSink) -> None:
    await run(sink)
    sink.ensure_started()  # a source that ended before it connected (an empty recording) is done all the same


async def supervise_feed(
    name: str,
    run: FeedRun,
    sink: FrameSink,
    backoff: BackoffPolicy,
    stats: PipelineStats,
    *,
    restart_when_finished: bool = True,
    rng: Callable[[], float] = random.random,
    lease_valid: Callable[[], bool] | None = None,
    on_stopped: Callable[[str, str], None] | None = None,
) -> None:
    """Run ``run(sink)`` forever (or until it finishes, for finite sources), restarting it on failure.

    ``lease_valid``: whether this process may still read the feed (see the module's docstring).
    ``on_stopped(name, reason)`` is told each time the feed stops receiving (the gap ledger)."""
    failures = 0
    while True:
        stats.feed_state[name] = FeedState.STARTING
        retry_after_s = 0.0
        attempt: AttemptSink | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                    nonlocal attempt
                    attempt = AttemptSink(sink, task_status, lease_valid)
                    await _attempt_task(run, attempt)

                await nursery.start(start)
                stats.feed_state[name] = FeedState.CONNECTED
        except Exception as raised:  # a failing feed must not take the others down
            exc = _innermost(raised)
            error = REDACTOR.redact(f"{type(exc).__name__}: {exc}")
            stats.feed_last_error[name] = error
            log.warning("feed failed", feed=name, error=error)
            if on_stopped is not None:
                on_stopped(name, error)
            if isinstance(exc, RetryLater):
                retry_after_s = exc.retry_after_s
        else:
            if not restart_when_finished:
                stats.feed_state[name] = FeedState.FINISHED
                return
            log.info("feed stream ended; reconnecting", feed=name)
            if on_stopped is not None:
                on_stopped(name, "the stream ended")
        outcome = _outcome(attempt, retry_after_s)
        failures, delay = backoff.after(failures, outcome, rng)
        stats.feed_state[name] = FeedState.BACKOFF
        stats.feed_restarts[name] += 1
        log.info("feed restarting", feed=name, delay_s=round(delay, 3), productive=outcome.delivered, failures=failures)
        await trio.sleep(delay)


def _outcome(attempt: AttemptSink | None, retry_after_s: float) -> Attempt:
    if attempt is None or attempt.connected_at is None:
        return Attempt(retry_after_s=retry_after_s)
    return Attempt(
        delivered=attempt.frames_after_connected > 0,
        connected_for_s=trio.current_time() - attempt.connected_at,
        retry_after_s=retry_after_s,
    )


class _Unused:
    """The sink of a child bound to its own: nothing is written to it."""

    def connected(self, feed: str) -> None:
        raise AssertionError("a child bound to its own sink does not write to the supervisor's")

    async def emit(self, frame: ReceivedFrame) -> None:
        raise AssertionError("a child bound to its own sink does not write to the supervisor's")


async def run_supervised(
    name: str,
    child: Callable[[], Awaitable[None]],
    backoff: BackoffPolicy,
    stats: PipelineStats,
    *,
    restart_when_finished: bool = True,
    rng: Callable[[], float] = random.random,
) -> None:
    """``supervise_feed`` for a child bound to its own sink (``bridge record``).

    The supervisor cannot see that sink, so it reads, when the attempt ends, what every sink
    records: whether the feed's state became ``connected``, and how much ``frames_received`` grew
    (the hello's frames included, which is the one difference from ``supervise_feed``).
    """

    async def run(sink: FrameSink) -> None:
        assert isinstance(sink, AttemptSink)
        started_at, frames = trio.current_time(), stats.frames_received[name]
        try:
            await child()
        finally:
            if stats.feed_state.get(name) == FeedState.CONNECTED:
                sink.connected_at = started_at
                sink.frames_after_connected = stats.frames_received[name] - frames

    await supervise_feed(name, run, _Unused(), backoff, stats, restart_when_finished=restart_when_finished, rng=rng)
