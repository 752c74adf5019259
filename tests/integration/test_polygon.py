"""The polygon feed end to end: the vendor protocol on a loopback server, real PostgreSQL."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import open_websocket_url

from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.replay import ReplayFeed
from bridge.adapters.simulator.polygon import (
    MAX_CONNECTIONS_MESSAGE,
    SPEC_CONNECT_EVENT,
    PolygonMarket,
    PolygonScenario,
    SentLog,
    prebuilt_frames,
    serve_polygon_simulator,
)
from bridge.adapters.simulator.polygon_market import NOT_AUTHORIZED_MESSAGE
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame, Table
from bridge.domain.normalizers.polygon import PolygonNormalizer
from tests.integration.helpers import never, query
from tests.integration.test_pipeline_postgres import CONFIG

SESSION = Path(__file__).parent.parent / "fixtures" / "polygon_session.jsonl"
KEY = "polygon-key-123"


async def test_a_recorded_session_replays_into_exact_rows(database_url: str, repository: PostgresRepository) -> None:
    for _ in range(2):  # the second replay changes nothing
        assert await run_bridge([ReplayFeed([SESSION])], repository, normalizers(), CONFIG, PipelineStats(), utc_now,
                                never)  # fmt: skip
    rows = query(database_url, "select raw->>'q', symbol, option_symbol, side, trade_price::text, size::int,"
                               " notional::text, bid::text, ask::text, venue, source, strike::int, expiration::text,"
                               " option_type, event_ts = to_timestamp((raw->>'t')::bigint / 1000.0)"
                               " from options_flow order by event_ts")  # fmt: skip
    assert rows == [
        ("101", "SPY", "SPY251219C00650000", "buy", "2.4", 5, "1200.0", "2.3", "2.4", "XCBO", "polygon", 650,
         "2025-12-19", "call", True),
        ("102", "SPY", "SPY251219C00650000", "unknown", "2.35", 1, "235.00", "2.3", "2.4", "ARCO", "polygon", 650,
         "2025-12-19", "call", True),
        ("7", "SPX", "SPXW251219P06000000", "unknown", "41.5", 2, "8300.0", None, None, "399", "polygon", 6000,
         "2025-12-19", "put", True),
        ("104", "SPY", "SPY251219C00650000", "sell", "2.33", 10, "2330.00", "2.32", "2.38", "XPHL", "polygon", 650,
         "2025-12-19", "call", True),
        ("105", "SPY", "SPY251219C00650000", "sell", "2.32", 4, "928.00", "2.32", "2.38", "XNDQ", "polygon", 650,
         "2025-12-19", "call", True),
        ("106", "SPY", "SPY251219C00650000", "unknown", "2.38", 3, "714.00", None, None, "XCBO", "polygon", 650,
         "2025-12-19", "call", True),
    ]  # fmt: skip
    ((reason,),) = query(database_url, "select reason from bridge_dead_letters")
    assert reason == "event 0: event type 'AM' is not stored by this bridge"


async def stream_polygon(
    repository: PostgresRepository, *, total_trades: int, quote_limit: int = 1000, **simulator: Any
) -> tuple[SentLog, PipelineStats, PolygonFeed, PolygonNormalizer]:
    sent = SentLog()
    stats = PipelineStats()
    normalizer_map = normalizers()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_polygon_simulator, api_key=KEY, events_per_second=None, total_trades=total_trades,
            quote_limit=quote_limit, log=sent, **simulator))  # fmt: skip
        feed = PolygonFeed(url=url, api_key=KEY, clock=utc_now, quote_limit=quote_limit, max_silence_s=5)
        done = stop_when(lambda: stats.rows_normalized[Table.OPTIONS_FLOW] >= total_trades)
        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizer_map, CONFIG, stats, utc_now, done)
        nursery.cancel_scope.cancel()
    normalizer = normalizer_map["polygon"]
    assert isinstance(normalizer, PolygonNormalizer)
    return sent, stats, feed, normalizer


async def test_a_live_stream_lands_every_trade_with_quotes_managed_within_the_limit(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, _, feed, normalizer = await stream_polygon(repository, total_trades=4000, quote_limit=25, contracts=120)
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(4000, 4000)]
    assert sent.extra["max_quote_subscriptions"] == 25  # it filled the limit...
    assert sent.extra["quote_limit_exceeded"] == 0  # ...and never asked for more
    assert sent.extra["quotes"] > 0
    assert len(feed.protocol.quotes.current) == 25
    # Trades of contracts without a current quote subscription have no usable quote; the count is reported.
    assert 0 < normalizer.trades_without_quote < normalizer.trades == 4000
    sides = dict(query(database_url, "select side, count(*) from options_flow group by side"))
    assert sides["buy"] > 0 and sides["sell"] > 0 and sides["unknown"] >= normalizer.trades_without_quote
    unquoted = query(database_url, "select count(*) from options_flow where bid is null")
    assert unquoted == [(normalizer.trades_without_quote,)]


async def test_prebuilt_frames_are_sent_as_built_once_their_quotes_are_subscribed(
    database_url: str, repository: PostgresRepository
) -> None:
    frames = prebuilt_frames(PolygonScenario(seed=3, contracts=40, start=datetime.now(UTC)), 3000, batch_size=100)
    assert sum(frame.trades for frame in frames) == 3000
    quotes_built = sum(frame.quotes for frame in frames)
    sent, _, _, normalizer = await stream_polygon(repository, total_trades=3000, frames=frames)
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(3000, 3000)]
    # Until a contract's first trade the bridge has not subscribed its quotes, so those are left out.
    assert 0 < sent.extra["quotes"] == normalizer.quotes < quotes_built
    assert sent.frames_sent == len(frames)


async def test_a_server_closing_every_few_frames_loses_and_duplicates_nothing(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats, _, _ = await stream_polygon(repository, total_trades=3000, disconnect_every_frames=5, batch_size=50)
    assert stats.feed_restarts["polygon"] >= 10
    assert sent.connections == stats.feed_restarts["polygon"] + 1
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(3000, 3000)]
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_the_spec_connect_event_is_answered_with_auth_like_the_official_clients_do(
    database_url: str, repository: PostgresRepository
) -> None:
    """The spec's connect event says ``success``, not ``connected``: the feed authenticates all the same.

    (Waiting for ``connected`` it never sent ``auth``: the server timed the client out and no trade landed.)
    """
    sent, stats, _, _ = await stream_polygon(
        repository, total_trades=500, connect_event=SPEC_CONNECT_EVENT, disconnect_every_frames=4, batch_size=50
    )
    assert sent.extra["auth_timeout"] == 0
    assert sent.connections == stats.feed_restarts["polygon"] + 1 >= 2  # and again after every reconnect
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(500, 500)]
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_a_trade_beyond_64_bits_and_one_without_an_exchange_land_exactly(
    database_url: str, repository: PostgresRepository
) -> None:
    at = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    t = int(at.timestamp() * 1000) - 500
    text = (
        f'[{{"ev":"T","sym":"O:SPY251219C00650000","x":302,"p":1.25,"s":{2**64 + 1},"t":{t},"q":1}},'
        f'{{"ev":"T","sym":"O:SPY251219C00650000","p":1.5,"s":2,"t":{t},"q":2}}]'
    )

    class One:
        name, finite = "polygon", True

        async def run(self, sink: Any) -> None:
            await sink.emit(ReceivedFrame("polygon", at, text))

    assert await run_bridge([One()], repository, normalizers(), CONFIG, PipelineStats(), utc_now, never)
    assert query(database_url, "select size, notional, venue, (raw->>'s')::numeric from options_flow order by 1") == [
        (Decimal(2), Decimal("300.0"), None, Decimal(2)),  # no "x": stored, without a venue
        (Decimal(2**64 + 1), Decimal("1.25") * (2**64 + 1) * 100, "XCBO", Decimal(2**64 + 1)),
    ]


async def test_a_wrong_key_ends_in_auth_failed_handling_not_a_crash(repository: PostgresRepository) -> None:
    sent = SentLog()
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_polygon_simulator, api_key=KEY, log=sent))
        feed = PolygonFeed(url=url, api_key="not-the-key", clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "the server refused the API key (auth_failed: authentication failed)" in stats.feed_last_error["polygon"]
    assert stats.feed_restarts["polygon"] == 1 and sent.extra["auth_failed"] == 1  # waiting minutes, not looping
    assert "not-the-key" not in stats.feed_last_error["polygon"]
    assert Decimal(1)  # the pipeline itself stayed up and flushed (run_bridge returned True above)


async def test_quote_subscription_churn_at_full_speed_never_stalls_the_stream(
    database_url: str, repository: PostgresRepository
) -> None:
    """More contracts trade than quotes may be streamed: subscriptions churn on every frame.

    Sending them from the receive path once deadlocked against a server whose own sends were
    blocked on us; they now go from a task of their own while receiving goes on.
    """
    sent, _, feed, _ = await stream_polygon(repository, total_trades=20_000, quote_limit=300, contracts=2000,
                                            batch_size=200)  # fmt: skip
    assert query(database_url, "select count(*), count(distinct id) from options_flow") == [(20_000, 20_000)]
    assert sent.extra["max_quote_subscriptions"] <= 300 and sent.extra["quote_limit_exceeded"] == 0
    assert feed.protocol.quote_messages_sent > 50


async def wait_until(condition: Any, timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.01)


async def test_the_market_trades_with_nobody_connected_and_rest_serves_it_as_the_vendor_does() -> None:
    market, sent = PolygonMarket(KEY), SentLog()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_polygon_simulator, api_key=KEY, events_per_second=5000,
                                              batch_size=20, contracts=3, log=sent, market=market))  # fmt: skip
        await wait_until(lambda: market.all_trades() >= 300)
        assert sent.connections == 0 and sent.messages_sent == 0  # nobody was there: it traded all the same
        ticker = max(market.trades, key=lambda t: len(market.trades[t]))
        expected = list(market.trades[ticker])
        async with httpx.AsyncClient(base_url=market.base_url) as client:
            first = (await client.get(f"/v3/trades/{ticker}", params={"apiKey": KEY, "limit": 40})).json()
            pages, results, body = 1, list(first["results"]), first
            while "next_url" in body:  # the cursor holds the query; the key goes in the header this time
                body = (await client.get(body["next_url"], headers={"Authorization": f"Bearer {KEY}"})).json()
                results += body["results"]
                pages += 1
            assert results[: len(expected)] == expected  # ascending, every trade (and those made since)
            assert results == market.trades[ticker][: len(results)]
            assert pages == -(-len(results) // 40) and first["status"] == "OK"
            assert set(results[0]) == {"conditions", "exchange", "participant_timestamp", "price", "sip_timestamp",
                                       "size"}  # no sequence number for options trades  # fmt: skip
            low, high = expected[5]["sip_timestamp"], expected[9]["sip_timestamp"]
            iso_low = datetime.fromtimestamp(low // 1000 / 1e6, UTC).isoformat()  # microseconds, floored
            window = (await client.get(f"/v3/trades/{ticker}", params={
                "apiKey": KEY, "timestamp.gte": iso_low, "timestamp.lt": high, "order": "desc"})).json()  # fmt: skip
            assert window["results"] == [t for t in expected if low // 1000 * 1000 <= t["sip_timestamp"] < high][::-1]
            quotes = (await client.get(f"/v3/quotes/{ticker}", params={"apiKey": KEY, "limit": 1})).json()
            assert "sequence_number" in quotes["results"][0] and "next_url" in quotes

            assert (await client.get(f"/v3/trades/{ticker}", params={"apiKey": "wrong"})).status_code == 401
            market.rate_limited_requests = 1
            limited = await client.get(f"/v3/trades/{ticker}", params={"apiKey": KEY})
            assert limited.status_code == 429 and "exceeded the maximum requests" in limited.json()["error"]
            assert (await client.get(f"/v3/trades/{ticker}", params={"apiKey": KEY})).status_code == 200
            market.quotes_entitled = False
            refused = await client.get(f"/v3/quotes/{ticker}", params={"apiKey": KEY})
            assert (await client.get(f"/v3/trades/{ticker}", params={"apiKey": KEY})).status_code == 200
            market.rest_entitled = False
            refused_trades = await client.get(f"/v3/trades/{ticker}", params={"apiKey": KEY})
            for answer in (refused, refused_trades):
                assert answer.status_code == 403
                assert answer.json()["status"] == "NOT_AUTHORIZED"
                assert answer.json()["message"] == NOT_AUTHORIZED_MESSAGE
        nursery.cancel_scope.cancel()


async def test_a_second_connection_of_a_key_closes_the_first_with_max_connections(
    repository: PostgresRepository,
) -> None:
    """The vendor keeps one connection per key, the newest: the feed that lost it waits instead of fighting."""
    sent, stats = SentLog(), PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_polygon_simulator, api_key=KEY, events_per_second=2000,
                                                    batch_size=20, log=sent))  # fmt: skip
        feed = PolygonFeed(url=url, api_key=KEY, clock=utc_now, max_silence_s=5)
        other: list[Any] = []

        async def second_connection() -> None:
            await wait_until(lambda: sent.messages_sent > 0)
            async with open_websocket_url(url) as ws:
                await ws.get_message()
                await ws.send_message(orjson.dumps({"action": "auth", "params": KEY}).decode())
                other.append(orjson.loads(await ws.get_message()))
                await ws.send_message(orjson.dumps({"action": "subscribe", "params": "T.*"}).decode())
                await wait_until(lambda: stats.feed_last_error.get("polygon") is not None)
                other.append(orjson.loads(await ws.get_message()))  # still served
                await trio.sleep(1)  # the feed does not come back to take it over

        calls = [0]

        async def stop() -> None:  # called again for a second stop request: that one never comes
            calls[0] += 1
            if calls[0] > 1:
                await trio.sleep_forever()
            await second_connection()

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, stop)
        nursery.cancel_scope.cancel()
    assert other[0] == [{"ev": "status", "status": "auth_success", "message": "authenticated"}]
    assert sent.extra["max_connections"] == 1 and sent.connections == 2
    assert stats.feed_last_error["polygon"] == (
        f"RetryLater: another connection with this key took over (max_connections: {MAX_CONNECTIONS_MESSAGE})")
    assert stats.feed_restarts["polygon"] == 1  # waiting a minute, not reconnecting at once
