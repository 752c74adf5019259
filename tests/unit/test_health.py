"""Health, readiness and metrics, computed from the pipeline's counters and the repository's answer."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import trio
import trio.testing

from bridge.adapters.http import Request
from bridge.adapters.memory import MemoryRepository
from bridge.app.health import DatabaseProbe, http_routes
from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.models import Row, Table
from bridge.domain.normalizers.polygon import PolygonNormalizer

GET = Request("GET", "/", {})


async def test_ready_only_when_the_database_answers_and_every_feed_is_up_or_backing_off() -> None:
    stats = PipelineStats()
    down = True

    def database(table: Table, rows: Sequence[Row]) -> None:
        if down:
            raise ConnectionError("connection refused")

    routes = http_routes(stats, {}, MemoryRepository(fail=database))
    stats.feed_state.update({"console": FeedState.CONNECTED, "polygon": FeedState.STARTING})
    response = await routes["/readyz"](GET)
    assert response.status == 503
    assert orjson.loads(response.body)["problems"] == [
        "database: ConnectionError: connection refused",
        "feed polygon: starting, never connected since start",
    ]
    down = False
    stats.feed_state["polygon"] = FeedState.BACKOFF
    assert (await routes["/readyz"](GET)).status == 503  # backing off, but it never connected
    stats.feeds_ever_connected.add("polygon")
    assert (await routes["/readyz"](GET)).status == 200
    assert (await routes["/healthz"](GET)).status == 200


async def test_metrics_expose_the_counters_histograms_and_quote_coverage() -> None:
    stats = PipelineStats()
    stats.frames_received["polygon"] = 7
    stats.dead_letters_by_reason[("polygon", "invalid_json")] = 2
    stats.rows_written[Table.OPTIONS_FLOW] = 40
    stats.batch_rows[Table.OPTIONS_FLOW].observe(40)
    stats.commit_latency_s.observe(0.03, times=40)
    stats.feed_state["polygon"] = FeedState.CONNECTED
    polygon = PolygonNormalizer()
    polygon.trades, polygon.trades_without_quote = 10, 3
    text = (await http_routes(stats, {"polygon": polygon}, MemoryRepository())["/metrics"](GET)).body.decode()
    for line in (
        'bridge_frames_received_total{feed="polygon"} 7.0',
        'bridge_frames_dead_lettered_total{feed="polygon",reason="invalid_json"} 2.0',
        'bridge_rows_written_total{table="options_flow"} 40.0',
        'bridge_batch_rows_bucket{le="50",table="options_flow"} 1.0',
        'bridge_commit_latency_seconds_bucket{le="0.05"} 40.0',
        'bridge_commit_latency_seconds_bucket{le="0.025"} 0.0',
        'bridge_feed_connected{feed="polygon"} 1.0',
        "bridge_polygon_trades_without_quote_total 3.0",
    ):
        assert line in text, line


NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


async def readiness(routes: dict, expected_status: int) -> list[str]:
    response = await routes["/readyz"](GET)
    assert response.status == expected_status, response.body
    problems: list[str] = orjson.loads(response.body)["problems"]
    return problems


async def test_not_ready_for_a_feed_that_never_connected_a_stuck_writer_a_paused_journal_or_bad_credentials(
    mock_clock: trio.testing.MockClock,
) -> None:
    """On a clock that moves only when told: the database ping runs on a real thread."""
    stats = PipelineStats()
    routes = http_routes(stats, {}, MemoryRepository(), write_retry_limit_s=30.0)
    stats.feed_state.update({"console": FeedState.BACKOFF, "polygon": FeedState.BACKOFF, "schwab": FeedState.STARTING})
    stats.feeds_ever_connected.add("polygon")
    stats.feed_last_error["console"] = "ConnectionRefusedError: [Errno 111] Connection refused"
    stats.write_retrying_since[Table.OPTIONS_FLOW] = trio.current_time()
    stats.write_retrying_since[Table.NEWS_EVENTS] = trio.current_time() - 31
    stats.journal_paused = "journal budget reached (1048576 bytes)"
    stats.credential_problems["tastytrade"] = "refresh failed: 401 invalid_grant"
    assert await readiness(routes, 503) == [
        "feed console: backoff, never connected since start; last error: ConnectionRefusedError: [Errno 111]"
        " Connection refused",
        "feed schwab: starting, never connected since start",
        "writer news_events: retrying one batch for 31 s (limit 30 s)",
        "journal: feeds paused: journal budget reached (1048576 bytes)",
        "credentials tastytrade: refresh failed: 401 invalid_grant",
    ]
    assert (await routes["/healthz"](GET)).status == 200
    mock_clock.jump(30)  # the other writer passes the limit too
    assert "writer options_flow: retrying one batch for 30 s (limit 30 s)" not in await readiness(routes, 503)
    mock_clock.jump(1)
    assert "writer options_flow: retrying one batch for 31 s (limit 30 s)" in await readiness(routes, 503)
    stats.feeds_ever_connected.update({"console", "schwab"})
    stats.feed_state["schwab"] = FeedState.CONNECTED
    stats.write_retrying_since.clear()
    stats.journal_paused = None
    stats.credential_problems.clear()
    assert await readiness(routes, 200) == []
    stats.feed_state["schwab"] = FeedState.STOPPED  # connected once, then stopped: still reported
    assert await readiness(routes, 503) == ["feed schwab: stopped"]


async def test_a_database_probe_runs_on_its_own_limiter_while_writes_hold_the_default_one() -> None:
    trio.to_thread.current_default_thread_limiter().total_tokens = 1
    release = threading.Event()
    stats = PipelineStats()
    routes = http_routes(stats, {}, MemoryRepository(), database_check_timeout_s=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, release.wait)  # a write holding the default limiter
        await trio.sleep(0.05)
        with trio.fail_after(2):
            assert await readiness(routes, 200) == []
        release.set()


async def test_a_slow_ping_is_never_doubled_and_later_probes_report_it_still_running() -> None:
    release = threading.Event()
    calls = 0

    def ping() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            release.wait(10)
        else:
            raise OSError("server closed the connection unexpectedly\nThis probably means...")

    probe = DatabaseProbe(ping, timeout_s=0.2)
    results: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(results, probe.check()))
        await trio.sleep(0.05)
        nursery.start_soon(lambda: _append(results, probe.check()))  # joins the running ping
    assert sorted(results, key=str) == ["database: no answer within 0.2 s", "database: probe still running > 0 s"]
    assert await probe.check() == "database: probe still running > 0 s"  # no second ping started
    assert calls == 1
    release.set()
    with trio.fail_after(2):
        while probe.running_since is not None:
            await trio.sleep(0.01)
    assert await probe.check() == "database: OSError: server closed the connection unexpectedly"
    assert calls == 2


async def _append(results: list[str | None], check: object) -> None:
    results.append(await check)  # type: ignore[misc]


async def test_metrics_for_credentials_gaps_leases_journal_and_stuck_writers(autojump_clock: trio.abc.Clock) -> None:
    stats = PipelineStats()
    stats.credential_expiry[("schwab", "access")] = NOW + timedelta(minutes=30)
    stats.credential_expiry[("schwab", "refresh")] = NOW - timedelta(seconds=5)
    stats.blind_seconds["polygon"] = 12.5  # type: ignore[assignment]
    stats.lease_held.update({"polygon": True, "console": False})
    stats.journal_bytes, stats.journal_budget_bytes, stats.journal_damaged_records = 4096, 1 << 20, 3
    stats.journal_paused = "disk full"
    stats.rows_committed[Table.NEWS_EVENTS] = 5
    await trio.sleep(100)
    stats.write_retrying_since[Table.OPTIONS_FLOW] = trio.current_time() - 42
    routes = http_routes(stats, {}, MemoryRepository(), wall_clock=lambda: NOW)
    text = (await routes["/metrics"](GET)).body.decode()
    for line in (
        'bridge_credential_expires_in_seconds{feed="schwab",kind="access"} 1800.0',
        'bridge_credential_expires_in_seconds{feed="schwab",kind="refresh"} -5.0',
        'bridge_feed_blind_seconds_total{feed="polygon"} 12.5',
        'bridge_lease_held{feed="console"} 0.0',
        'bridge_lease_held{feed="polygon"} 1.0',
        "bridge_journal_bytes 4096.0",
        "bridge_journal_budget_bytes 1.048576e+06",
        "bridge_journal_paused 1.0",
        "bridge_journal_damaged_records_total 3.0",
        'bridge_writer_retrying_seconds{table="options_flow"} 42.0',
        'bridge_writer_retrying_seconds{table="news_events"} 0.0',
    ):
        assert line in text, line
    stats.journal_paused, stats.journal_budget_bytes = None, None
    text = (await routes["/metrics"](GET)).body.decode()
    assert "bridge_journal_paused 0.0" in text
    assert "\nbridge_journal_budget_bytes " not in text
