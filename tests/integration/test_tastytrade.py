"""The tastytrade feed against a local streamer and REST API: the tables end equal to the broker's state."""

from __future__ import annotations

import functools
from decimal import Decimal

import trio

from bridge.adapters.feeds.tastytrade import TastytradeFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.tastytrade import BrokerState, SentLog, serve_tastytrade_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import Table
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

ACCOUNTS = ("5WT00001", "5WT00002")


async def test_stream_snapshots_and_reconnects_keep_the_tables_equal_to_the_broker(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats, broker = SentLog(), PipelineStats(), BrokerState(ACCOUNTS)
    async with trio.open_nursery() as nursery:
        ws_url, api_url = await nursery.start(functools.partial(
            serve_tastytrade_simulator, token="tt-session", accounts=ACCOUNTS, updates_per_second=400,
            total_updates=600, disconnect_every_frames=70, log=sent, state=broker))  # fmt: skip
        feed = TastytradeFeed(url=ws_url, api_url=api_url, token="tt-session", accounts=ACCOUNTS, clock=utc_now,
                              heartbeat_s=0.2)  # fmt: skip
        rows_expected = lambda: (
            sent.messages_sent >= 600
            and (
                stats.rows_committed[Table.BROKER_POSITIONS] + stats.rows_committed[Table.BROKER_BALANCES]
                >= sent.messages_sent
            )
        )
        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, stop_when(rows_expected))
        nursery.cancel_scope.cancel()
    assert stats.feed_restarts["tastytrade"] >= 5
    assert sent.extra["rest_positions"] >= 2 * (stats.feed_restarts["tastytrade"] + 1)  # a snapshot per (re)connect
    assert sent.extra["heartbeats"] > 0
    stored = query(database_url, "select a.external_account_id, p.symbol, p.qty from broker_positions p"
                                 " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    assert {(account, symbol): int(qty) for account, symbol, qty in stored} == {
        key: qty for key, qty in broker.positions.items() if qty != 0
    }
    cash = query(database_url, "select a.external_account_id, b.cash from broker_balances b"
                               " join broker_accounts a on a.id = b.broker_account_id")  # fmt: skip
    assert {account: Decimal(value) for account, value in cash} == broker.cash


async def test_a_refused_token_is_reported_and_retried_slowly(repository: PostgresRepository) -> None:
    sent, stats = SentLog(), PipelineStats()
    async with trio.open_nursery() as nursery:
        ws_url, api_url = await nursery.start(functools.partial(serve_tastytrade_simulator, token="right", log=sent))
        feed = TastytradeFeed(url=ws_url, api_url=api_url, token="wrong", accounts=ACCOUNTS, clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "the streamer refused the token (invalid auth-token)" in stats.feed_last_error["tastytrade"]
    assert sent.extra["refused"] == 1 and stats.feed_restarts["tastytrade"] == 1
