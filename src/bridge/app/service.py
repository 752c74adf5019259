"""The service layer: what ``bridge run`` and ``bridge record`` do, given the adapters to do it with.

Nothing here reads the environment or builds a feed: the entry points (``bridge.app.cli``, the demo)
construct the repository, feeds, normalizers and clock through the registry and hand them in, so
tests can hand in fakes.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import trio

from bridge.adapters.http import HttpBindError, serve_http
from bridge.adapters.journal import JournalConfig
from bridge.adapters.recording import RecordingWriter
from bridge.app.health import http_routes
from bridge.app.leases import LeaseCoordinator
from bridge.app.pipeline import FrameTap, PipelineConfig, run_bridge
from bridge.app.progress import serve_progress_log
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import run_supervised
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, Feed, Normalizer, Repository, RetryLater
from bridge.logs import get_logger

if TYPE_CHECKING:
    from bridge.app.settings import Settings

log = get_logger(__name__, component="service")

StopWaiter = Callable[[], Awaitable[None]]

PROGRESS_INTERVAL_S = 60.0
"""Seconds between ``bridge run``'s ``progress`` log lines (read at each call, so a test can shorten it)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalizers(settings: Settings | None = None) -> Mapping[str, Normalizer]:
    """One fresh normalizer per feed name (kept here for existing callers; the registry builds them)."""
    from bridge.app.registry import build_normalizers
    from bridge.app.settings import Settings

    return build_normalizers(settings or Settings())


class HttpPortUnavailable(Exception):
    """The health/metrics server could not listen (the port is taken, or the address is not this host's)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port} (BRIDGE_HTTP_PORT={port}, BRIDGE_HTTP_HOST={host}): "
                         f"{reason}; choose another port, or 0 to turn the HTTP server off")  # fmt: skip


class FeedRefused(Exception):
    """``bridge record``: the vendor refused the credentials, so waiting and retrying cannot help."""


def pipeline_config(settings: Settings, *, durable: bool = True) -> PipelineConfig:
    """The pipeline as the settings say; ``durable=False`` keeps the journal in memory (``bridge replay``:
    its input is a file already, and it may run beside a ``bridge run`` that holds the journal)."""
    return PipelineConfig(
        batching=settings.batching,
        shutdown_grace_s=settings.shutdown_grace_s,
        max_frame_bytes=settings.max_frame_bytes,
        options_flow_writers=settings.options_flow_writers,
        instance_id=settings.instance_id,
        journal=JournalConfig(
            directory=settings.effective_journal_dir if durable else None,
            max_bytes=settings.journal_max_bytes,
            fsync_interval_s=settings.journal_fsync_ms / 1000,
            retain_s=settings.journal_retain_s,
            warmup_s=settings.quote_max_age_ms / 1000 + 1,
        ),
    )


def signal_waiter(receiver: AsyncIterator[int], *, first_after_s: float | None = None) -> StopWaiter:
    """A stop waiter that returns on each SIGTERM or SIGINT; the first also after ``first_after_s``."""
    calls = 0

    async def wait() -> None:
        nonlocal calls
        calls += 1
        timeout = first_after_s if calls == 1 and first_after_s is not None else float("inf")
        with trio.move_on_after(timeout):
            signum = await anext(receiver)
            log.info("signal received", signal=signal.Signals(signum).name)

    return wait


def stop_when(condition: Callable[[], bool], *, poll_s: float = 0.02) -> StopWaiter:
    """A stop waiter whose one request comes once ``condition()`` holds (benchmarks, tests, replays)."""
    calls = 0

    async def wait() -> None:
        nonlocal calls
        calls += 1
        while calls > 1 or not condition():  # noqa: ASYNC110 - counters have no event to wait on
            await trio.sleep(poll_s)

    return wait


async def serve_until_signalled(
    feeds: Sequence[Feed],
    repository: Repository,
    normalizers: Mapping[str, Normalizer],
    config: PipelineConfig,
    stats: PipelineStats,
    *,
    http_port: int = 0,
    http_host: str = "0.0.0.0",
    tap: FrameTap | None = None,
    clock: Clock = utc_now,
    progress_interval_s: float | None = None,
    leases: LeaseCoordinator | None = None,
) -> bool:
    """``bridge run``: the pipeline, its HTTP endpoints and the progress log until SIGTERM/SIGINT.

    Returns True when all was flushed. A ``progress`` line is logged every ``progress_interval_s``
    (default ``PROGRESS_INTERVAL_S``), so the logs alone show the bridge's pulse. With ``leases`` each
    feed runs only while this replica holds its lease (``bridge.app.leases``).
    """
    interval_s = PROGRESS_INTERVAL_S if progress_interval_s is None else progress_interval_s
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_progress_log, stats, interval_s=interval_s), name="progress")
            if http_port:
                routes = http_routes(stats, normalizers, repository)
                try:
                    await nursery.start(functools.partial(serve_http, routes, port=http_port, host=http_host))
                except Exception as raised:  # serve_http's own nursery wraps the bind error in a group
                    exc = _innermost(raised)
                    if isinstance(exc, HttpBindError):
                        raise HttpPortUnavailable(http_host, http_port, exc.reason) from None
                    if isinstance(exc, OSError):
                        raise HttpPortUnavailable(http_host, http_port, exc.strerror or str(exc)) from None
                    raise
            flushed = await run_bridge(
                feeds, repository, normalizers, config, stats, clock, signal_waiter(signals), tap=tap, leases=leases
            )
            nursery.cancel_scope.cancel()
        return flushed


class RecordingSink:
    """Frames go to a recording file only (``bridge record``): no normalizing, no database."""

    def __init__(self, writer: RecordingWriter, stats: PipelineStats, limit: int | None) -> None:
        self.writer = writer
        self.stats = stats
        self.limit = limit
        self.done = trio.Event()

    def connected(self, feed: str) -> None:
        self.stats.feed_state[feed] = FeedState.CONNECTED
        log.info("recording", feed=feed, out=str(self.writer.path))

    async def emit(self, frame: ReceivedFrame) -> None:
        if self.done.is_set():
            await trio.sleep_forever()  # the limit is reached: nothing more is written, cancellation follows
        self.writer(frame)
        self.stats.frames_received[frame.feed] += 1
        if self.limit is not None and self.writer.frames >= self.limit:
            self.done.set()
        await trio.lowlevel.checkpoint()


async def record_feed(
    feed: Feed,
    writer: RecordingWriter,
    stats: PipelineStats,
    *,
    duration_s: float | None,
    frames: int | None,
    restart: PipelineConfig,
) -> None:
    """``bridge record``: the feed (reconnecting as usual) into a recording until a limit or a signal.

    A refused credential ends the recording with ``FeedRefused`` at the first refusal: the
    operator is waiting at a terminal, and the feed's five-minute wait would only hide the reason.
    """
    sink = RecordingSink(writer, stats, frames)
    refused: list[str] = []

    async def attempt() -> None:
        try:
            await feed.run(sink)
        except Exception as raised:
            exc = _innermost(raised)
            if isinstance(exc, RetryLater):
                refused.append(str(exc))
                nursery.cancel_scope.cancel()
                await trio.lowlevel.checkpoint()  # cancelled here: the supervisor never sees the refusal
            raise

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                await anext(signals)
                nursery.cancel_scope.cancel()

            async def stop_when_done() -> None:
                await sink.done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(stop_when_done)
            if duration_s is not None:
                nursery.cancel_scope.deadline = trio.current_time() + duration_s
            await run_supervised(
                feed.name,
                attempt,
                restart.feed_restart,
                stats,
                restart_when_finished=not feed.finite,
            )
            nursery.cancel_scope.cancel()
    if refused:
        raise FeedRefused(f"{feed.name}: {refused[0]}")


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
