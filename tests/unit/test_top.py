"""``bridge top``'s view: a pure function of two scrapes of the bridge's own metrics text."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import attrs
from rich.console import Console

from bridge.adapters.http import Request
from bridge.adapters.memory import MemoryRepository
from bridge.app.health import http_routes
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.top import FeedLine, Scrape, TableLine, build_view, metrics_url, render_line, render_panel
from bridge.domain.models import Table

NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
GET = Request("GET", "/metrics", {})


async def scrape_of(stats: PipelineStats, at: float) -> Scrape:
    routes = http_routes(stats, {}, MemoryRepository(), wall_clock=lambda: NOW)
    return Scrape.parse((await routes["/metrics"](GET)).body.decode(), at)


async def two_scrapes() -> tuple[Scrape, Scrape]:
    stats = PipelineStats()
    stats.feed_state.update({"console": FeedState.CONNECTED, "polygon": FeedState.BACKOFF})
    stats.frames_received.update({"console": 1000, "polygon": 10})
    stats.rows_committed[Table.OPTIONS_FLOW] = 5000
    stats.commit_latency_s.observe(20.0, times=5000)
    stats.lease_held.update({"console": True, "polygon": False})
    stats.journal_bytes, stats.journal_budget_bytes = 512 * 1024, 2 * 1024 * 1024
    stats.credential_expiry[("schwab", "access")] = NOW + timedelta(minutes=25)
    first = await scrape_of(stats, at=100.0)
    stats.frames_received["console"] += 400
    stats.dead_letters_by_reason[("console", "invalid_json")] += 3
    stats.rows_committed[Table.OPTIONS_FLOW] += 2000
    stats.rows_committed[Table.NEWS_EVENTS] += 8
    stats.commit_latency_s.observe(0.04, times=2008)
    stats.blind_seconds["polygon"] = 61
    stats.credential_expiry[("schwab", "refresh")] = NOW - timedelta(seconds=30)
    stats.journal_paused = "journal budget reached"
    return first, await scrape_of(stats, at=104.0)


async def test_rates_and_latency_come_from_the_difference_of_two_scrapes() -> None:
    first, second = await two_scrapes()
    view = build_view(first, second)
    assert view.feeds == (
        FeedLine("console", "connected", 100.0, 3, 0.0, "held"),
        FeedLine("polygon", "backoff", 0.0, 0, 61.0, "standby"),
    )
    assert view.tables == (TableLine("news_events", 8, 2.0), TableLine("options_flow", 7000, 500.0))
    assert view.commit_p99_s == 0.05  # the interval's rows only; the earlier 20 s ones are left out
    assert (view.journal_bytes, view.journal_budget_bytes, view.journal_paused) == (512 * 1024, 2 * 1024**2, True)
    assert view.credentials == (("schwab", "access", 1500.0), ("schwab", "refresh", -30.0))
    assert render_line(view) == (
        "feeds: console connected 100.0 frames/s dead=3 blind=0s lease=held;"
        " polygon backoff 0.0 frames/s dead=0 blind=61s lease=standby"
        " | rows/s: news_events 2.0, options_flow 500.0 | p99 <= 50 ms"
        " | journal 512.0 KiB / 2.0 MiB (25%) PAUSED | credentials: schwab access 25m, schwab refresh expired 30s ago"
    )


async def test_the_first_scrape_has_no_rates_yet_and_a_lifetime_p99() -> None:
    first, _ = await two_scrapes()
    view = build_view(None, first)
    assert [f.frames_per_s for f in view.feeds] == [None, None]
    assert view.tables == (TableLine("options_flow", 5000, None),)
    assert view.commit_p99_s == 30.0
    assert view.interval_s is None
    assert "console connected - frames/s" in render_line(view)


async def test_a_restarted_bridge_shows_no_negative_rates() -> None:
    first, second = await two_scrapes()
    view = build_view(second, attrs.evolve(first, at=108.0))  # counters went down
    assert [f.frames_per_s for f in view.feeds] == [0.0, 0.0]
    assert view.commit_p99_s == 30.0


def test_an_empty_scrape_renders() -> None:
    view = build_view(None, Scrape.parse("", 0.0))
    assert render_line(view) == "feeds: - | rows/s: - | p99 - | journal - / - | credentials: -"


async def test_the_terminal_panel_shows_every_part() -> None:
    first, second = await two_scrapes()
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(render_panel(build_view(first, second), "http://127.0.0.1:8080/metrics"))
    text = console.export_text()
    parts = ("console", "connected", "100.0", "standby", "options_flow", "7,000", "500.0", "<= 50 ms")
    parts += ("512.0 KiB / 2.0 MiB (25%) PAUSED", "schwab refresh expired 30s ago", "http://127.0.0.1:8080/metrics")
    for part in parts:
        assert part in text, part


def test_metrics_url() -> None:
    assert metrics_url("127.0.0.1:8080") == "http://127.0.0.1:8080/metrics"
    assert metrics_url("http://bridge:8080/") == "http://bridge:8080/metrics"
    assert metrics_url("http://bridge:8080/custom/metrics") == "http://bridge:8080/custom/metrics"
