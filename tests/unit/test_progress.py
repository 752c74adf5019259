"""The periodic progress line: the interval's rates, rows, p99, blind seconds and dead letters."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bridge.app.progress import bucket_quantile, serve_progress_log
from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.models import Table


async def test_one_line_per_interval_with_what_happened_in_it(autojump_clock: trio.abc.Clock) -> None:
    stats = PipelineStats()
    stats.feed_state.update({"console": FeedState.CONNECTED, "polygon": FeedState.STARTING})
    stats.frames_received["console"] = 1000  # before the first interval: not counted in it
    stats.commit_latency_s.observe(20.0, times=500)
    stats.rows_committed[Table.OPTIONS_FLOW] = 500

    async def pipeline() -> None:
        await trio.sleep(10)
        stats.frames_received["console"] += 600
        stats.frames_dead_lettered["console"] += 2
        stats.rows_committed[Table.OPTIONS_FLOW] += 590
        stats.rows_committed[Table.NEWS_EVENTS] += 8
        stats.commit_latency_s.observe(0.004, times=590)  # 99 % of the interval's rows under 5 ms…
        stats.commit_latency_s.observe(0.2, times=8)  # …but not 99 % of 598
        await trio.sleep(60)  # second interval
        stats.feed_state["polygon"] = FeedState.BACKOFF
        stats.blind_seconds["polygon"] += 42.5  # type: ignore[assignment]
        stats.frames_received["polygon"] += 30

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_progress_log, stats, 60.0)
            nursery.start_soon(pipeline)
            await trio.sleep(125)
            nursery.cancel_scope.cancel()
    lines = [entry for entry in logs if entry["event"] == "progress"]
    assert [entry["log_level"] for entry in lines] == ["info", "info"]
    first, second = lines
    assert first["feeds"] == {"console": "connected 10.0 frames/s", "polygon": "starting 0.0 frames/s"}
    assert first["rows_committed"] == {"news_events": 8, "options_flow": 590}
    assert first["commit_p99_s"] == 0.25
    assert first["dead_letters"] == {"console": 2}
    assert first["blind_s"] == {}
    assert first["interval_s"] == 60.0
    assert second["feeds"] == {"console": "connected 0.0 frames/s", "polygon": "backoff 0.5 frames/s"}
    assert second["rows_committed"] == {"news_events": 0, "options_flow": 0}
    assert second["commit_p99_s"] is None  # nothing committed in the interval
    assert second["blind_s"] == {"polygon": 42.5}
    assert second["dead_letters"] == {"console": 0}


def test_bucket_quantile() -> None:
    bounds = (0.01, 0.1, 1.0)
    assert bucket_quantile(bounds, [0, 0, 0, 0], 0.99) is None
    assert bucket_quantile(bounds, [99, 1, 0, 0], 0.99) == 0.01
    assert bucket_quantile(bounds, [98, 1, 1, 0], 0.99) == 0.1
    assert bucket_quantile(bounds, [0, 0, 0, 5], 0.5) == float("inf")
