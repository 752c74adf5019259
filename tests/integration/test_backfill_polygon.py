"""Polygon gap backfill end to end: a market that keeps trading while the bridge is away, REST, real PostgreSQL."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import trio

from bridge.adapters.backfill.polygon import PolygonRest
from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.polygon import PolygonMarket, SentLog, serve_polygon_simulator
from bridge.app.backfill import PolygonBackfiller
from bridge.app.pipeline import run_bridge
from bridge.app.service import stop_when, utc_now
from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.backfill import PolygonBackfillNormalizer
from bridge.domain.models import ReceivedFrame
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

KEY = "polygon-key-123"


async def run_market(
    repository: PostgresRepository,
    market: PolygonMarket,
    *,
    total_trades: int = 2500,
    contracts: int = 10,
    backfill_contracts: tuple[str, ...] = (),
    max_contracts: int = 10,
    disconnect_every_frames: int = 30,
) -> tuple[SentLog, PipelineStats, PolygonBackfiller]:
    sent, stats = SentLog(), PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_polygon_simulator, api_key=KEY, events_per_second=4000, batch_size=20, total_trades=total_trades,
            contracts=contracts, disconnect_every_frames=disconnect_every_frames, log=sent, market=market,
            open_at_first_subscription=True))  # fmt: skip
        feed = PolygonFeed(url=url, api_key=KEY, clock=utc_now, max_silence_s=5)
        backfiller = PolygonBackfiller(
            live=feed.protocol.live, rest=lambda: PolygonRest(market.base_url, KEY), clock=utc_now,
            contracts=backfill_contracts, max_contracts=max_contracts, settle_s=0.3,
        )  # fmt: skip
        feed.backfill = backfiller

        live_frames = [0]

        def tap(frame: ReceivedFrame) -> None:  # the stream's data frames (not status, not backfill)
            live_frames[0] += frame.text.startswith("[") and '"ev":"status"' not in frame.text

        def finished() -> bool:
            return (sent.extra["trades_generated"] >= total_trades and backfiller.gaps_seen >= 1
                    and backfiller.gaps_done == backfiller.gaps_seen == sent.connections - 1
                    and stats.feed_state.get("polygon") is FeedState.CONNECTED  # the last gap closed too
                    and live_frames[0] == sent.frames_sent)  # fmt: skip

        with trio.fail_after(60):
            assert await run_bridge([feed], repository, {"polygon": PolygonBackfillNormalizer()}, CONFIG, stats,
                                    utc_now, stop_when(finished), tap=tap)  # fmt: skip
        nursery.cancel_scope.cancel()
    return sent, stats, backfiller


def stored(database_url: str, contract: str) -> Counter[tuple[str, ...]]:
    rows = query(database_url, "select raw->>'t', raw->>'x', raw->>'p', raw->>'s' from options_flow"
                               f" where option_symbol = '{contract.removeprefix('O:')}'")  # fmt: skip
    return Counter(rows)


def traded(market: PolygonMarket, contract: str) -> Counter[tuple[str, ...]]:
    return Counter((str(t["sip_timestamp"] // 1_000_000), str(t["exchange"]), str(t["price"]), str(t["size"]))
                   for t in market.trades[contract])  # fmt: skip


async def test_after_forced_disconnects_every_trade_lands_exactly_once_and_blind_time_stays_under_a_second(
    database_url: str, repository: PostgresRepository
) -> None:
    market = PolygonMarket(KEY)
    sent, stats, backfiller = await run_market(repository, market)
    gaps = backfiller.gaps_seen
    assert gaps >= 3 and sent.connections == gaps + 1
    assert market.all_trades() == 2500 > sent.messages_by_table["options_flow"]  # trades happened while away
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(2500, 2500)]
    for contract in market.trades:
        assert stored(database_url, contract) == traded(market, contract), contract
    backfilled = query(database_url, "select count(*) from options_flow where raw ? 'rest'")[0][0]
    assert backfilled == 2500 - sent.messages_by_table["options_flow"] > 0
    ledger = query(database_url, "select backfill_status, sum(backfill_rows), count(*), max(ended_at - started_at)"
                                 " from bridge_feed_gaps where feed = 'polygon' and ended_at is not null"
                                 " group by 1")  # fmt: skip
    ((status, rows, count, longest),) = ledger
    assert (status, rows, count) == ("done", backfilled, gaps)
    assert longest.total_seconds() < 1.0  # blind time per reconnect after a productive connection
    assert stats.blind_seconds["polygon"] / gaps < 0.5
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_rate_limits_are_waited_out_and_a_plan_without_rest_marks_the_gap_unavailable(
    database_url: str, repository: PostgresRepository
) -> None:
    market = PolygonMarket(KEY, rate_limited_requests=2)
    await run_market(repository, market, total_trades=600, disconnect_every_frames=40)
    assert market.requests["rate_limited"] == 2
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(600, 600)]
    statuses = query(database_url, "select distinct backfill_status from bridge_feed_gaps"
                                   " where feed = 'polygon' and ended_at is not null")  # fmt: skip
    assert statuses == [("done",)]

    market = PolygonMarket(KEY, rest_entitled=False)
    await run_market(repository, market, total_trades=600, disconnect_every_frames=40)
    details = query(database_url, "select distinct backfill_status, backfill_rows, backfill_detail from"
                                  " bridge_feed_gaps where feed = 'polygon' and backfill_status <> 'done'")  # fmt: skip
    assert details == [("unavailable", 0, "the plan has no access to /v3/trades: You are not entitled to this data."
                        " Please upgrade your plan at https://polygon.io/pricing")]  # fmt: skip


async def test_a_plan_without_quotes_backfills_trades_with_an_unknown_side(
    database_url: str, repository: PostgresRepository
) -> None:
    market = PolygonMarket(KEY, quotes_entitled=False)
    await run_market(repository, market, total_trades=600, disconnect_every_frames=40)
    sides = query(database_url, "select distinct side, bid from options_flow where raw ? 'rest'")
    assert sides == [("unknown", None)]
    assert query(database_url, "select count(*) from options_flow") == [(600,)]
    (detail,) = query(database_url, "select distinct backfill_detail from bridge_feed_gaps"
                                    " where feed = 'polygon' and backfill_rows > 0 limit 1")[0]  # fmt: skip
    assert "no quotes (sides unknown): You are not entitled to this data." in detail


async def test_only_the_configured_and_most_recently_traded_contracts_are_backfilled(
    database_url: str, repository: PostgresRepository
) -> None:
    market = PolygonMarket(KEY)
    pinned = "O:" + query_first_contract()
    await run_market(repository, market, total_trades=1500, backfill_contracts=(pinned,), max_contracts=2)
    assert stored(database_url, pinned) == traded(market, pinned)
    per_gap: list[Any] = query(database_url, "select backfill_detail from bridge_feed_gaps"
                                             " where feed = 'polygon' and ended_at is not null")  # fmt: skip
    assert all(detail.endswith("of 2 contracts from REST") for (detail,) in per_gap)
    backfilled = query(database_url, "select count(distinct option_symbol) from options_flow where raw ? 'rest'")
    assert backfilled[0][0] <= 2 * len(per_gap)


def query_first_contract() -> str:
    from datetime import UTC, datetime

    from bridge.adapters.simulator.polygon import PolygonScenario

    return PolygonScenario(0, datetime.now(UTC), contracts=10).contracts[0].removeprefix("O:")
