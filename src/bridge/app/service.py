"""Wiring: settings into feeds, normalizers and the pipeline; the async entry points behind the CLI."""

from __future__ import annotations

import functools
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

import trio

from bridge.adapters.feeds.benzinga import BenzingaFeed
from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.feeds.tastytrade import TastytradeFeed
from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.http import serve_http
from bridge.adapters.recording import RecordingWriter
from bridge.app.health import http_routes
from bridge.app.pipeline import FrameTap, PipelineConfig, run_bridge
from bridge.app.settings import Settings
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import run_supervised
from bridge.domain.models import ReceivedFrame
from bridge.domain.nbbo import NbboBook
from bridge.domain.normalizers.benzinga import BenzingaNormalizer
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.normalizers.schwab import normalize_schwab
from bridge.domain.normalizers.tastytrade import normalize_tastytrade
from bridge.domain.normalizers.tradier import normalize_tradier
from bridge.domain.ports import Feed, Normalizer, Repository
from bridge.logs import get_logger

log = get_logger(__name__, component="service")

StopWaiter = Callable[[], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def normalizers(settings: Settings | None = None) -> Mapping[str, Normalizer]:
    """One normalizer per protocol, keyed by the feed name frames carry (live or recorded).

    Fresh instances each time: the Polygon normalizer keeps the NBBO book of its stream.
    """
    settings = settings or Settings()
    book = NbboBook(max_idle_ms=round(settings.nbbo_max_idle_s * 1000), max_contracts=settings.nbbo_max_contracts)
    return {
        "console": normalize_console,
        "polygon": PolygonNormalizer(quote_max_age_ms=settings.quote_max_age_ms, book=book),
        "benzinga": BenzingaNormalizer(),
        "tastytrade": normalize_tastytrade,
        "tradier": normalize_tradier,
        "schwab": normalize_schwab,
    }


def build_feed(name: str, settings: Settings) -> Feed:
    if name == "console":
        assert settings.console_url is not None
        return ConsoleFeed(
            url=settings.console_url,
            token=settings.console_token,
            clock=utc_now,
            max_silence_s=settings.max_silence_s,
        )
    if name == "polygon":
        assert settings.polygon_api_key is not None
        return PolygonFeed(
            url=settings.polygon_url,
            api_key=settings.polygon_api_key,
            clock=utc_now,
            channels=settings.polygon_subscribe,
            quote_limit=settings.polygon_quote_limit,
            quote_contracts=frozenset(settings.polygon_quote_contracts),
            max_silence_s=settings.max_silence_s,
        )
    if name == "tastytrade":
        assert settings.tastytrade_token is not None
        return TastytradeFeed(
            url=settings.tastytrade_url,
            api_url=settings.tastytrade_api_url,
            token=settings.tastytrade_token,
            accounts=settings.tastytrade_accounts,
            clock=utc_now,
        )
    if name == "tradier":
        assert settings.tradier_token is not None
        return TradierFeed(
            api_url=settings.tradier_api_url,
            token=settings.tradier_token,
            accounts=settings.tradier_accounts,
            clock=utc_now,
            poll_seconds=settings.tradier_poll_seconds,
        )
    if name == "schwab":
        assert settings.schwab_token is not None
        return SchwabFeed(
            api_url=settings.schwab_api_url,
            token=settings.schwab_token,
            clock=utc_now,
            poll_seconds=settings.schwab_poll_seconds,
        )
    if name == "benzinga":
        assert settings.benzinga_api_key is not None
        return BenzingaFeed(url=settings.benzinga_url, api_key=settings.benzinga_api_key, clock=utc_now)
    raise ValueError(f"unknown feed {name!r}")


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        batching=settings.batching,
        shutdown_grace_s=settings.shutdown_grace_s,
        spool_dir=settings.effective_spool_dir,
        buffer_max_rows=settings.buffer_max_rows,
        max_frame_bytes=settings.max_frame_bytes,
        options_flow_writers=settings.options_flow_writers,
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
) -> bool:
    """``bridge run``: the pipeline and its HTTP endpoints until SIGTERM/SIGINT; True when all was flushed."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if http_port:
                routes = http_routes(stats, normalizers, repository)
                await nursery.start(functools.partial(serve_http, routes, port=http_port, host=http_host))
            flushed = await run_bridge(
                feeds, repository, normalizers, config, stats, utc_now, signal_waiter(signals), tap=tap
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
    """``bridge record``: the feed (reconnecting as usual) into a recording until a limit or a signal."""
    sink = RecordingSink(writer, stats, frames)
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
                lambda: feed.run(sink),
                restart.feed_restart,
                stats,
                restart_when_finished=not feed.finite,
            )
            nursery.cancel_scope.cancel()
