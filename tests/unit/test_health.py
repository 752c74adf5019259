"""Health, readiness and metrics, computed from the pipeline's counters and the repository's answer."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from bridge.adapters.http import Request
from bridge.adapters.memory import MemoryRepository
from bridge.app.health import http_routes
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
        "feed polygon: starting",
    ]
    down = False
    stats.feed_state["polygon"] = FeedState.BACKOFF
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
