"""The tradier feed against a local Tradier: REST snapshots, polled at once after each fill."""

from __future__ import annotations

import functools
from decimal import Decimal

import trio

from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.tradier import SentLog, TradierState, serve_tradier_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, utc_now
from bridge.app.stats import PipelineStats
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

ACCOUNTS = ("VA000042", "VA000043")


def holdings(url: str) -> dict[tuple[str, str], int]:
    rows = query(url, "select a.external_account_id, p.symbol, p.qty from broker_positions p"
                      " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    return {(account, symbol): int(qty) for account, symbol, qty in rows}


async def test_fills_show_within_a_second_and_the_tables_equal_the_broker(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats, broker = SentLog(), PipelineStats(), TradierState(ACCOUNTS)
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(
            serve_tradier_simulator, token="tr-token", accounts=ACCOUNTS, fills_per_second=10, total_fills=30,
            heartbeat_s=0.5, log=sent, state=broker))  # fmt: skip
        # a long poll interval: only the fills' immediate polls can make changes show quickly
        feed = TradierFeed(api_url=api, token="tr-token", accounts=ACCOUNTS, clock=utc_now, poll_seconds=60)

        async def stop_a_second_after_the_last_fill() -> None:
            while sent.messages_sent < 30:
                await trio.sleep(0.05)
            await trio.sleep(1.0)

        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now,
                                    stop_a_second_after_the_last_fill)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert sent.extra["polls"] >= 10  # polled after fills, not every 60 s
    assert holdings(database_url) == {key: qty for key, qty in broker.positions.items() if qty}
    cash = query(database_url, "select a.external_account_id, b.cash from broker_balances b"
                               " join broker_accounts a on a.id = b.broker_account_id")  # fmt: skip
    assert {account: Decimal(str(value)) for account, value in cash} == broker.cash


async def test_a_refused_token_is_reported(repository: PostgresRepository) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_tradier_simulator, token="right"))
        feed = TradierFeed(api_url=api, token="wrong", accounts=("VA000042",), clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "the REST API refused the token (HTTP 401)" in stats.feed_last_error["tradier"]
    assert stats.feed_restarts["tradier"] == 1
