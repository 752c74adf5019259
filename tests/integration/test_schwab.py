"""The schwab feed against a local Schwab: streamer login, account activity, REST snapshots."""

from __future__ import annotations

import functools
from decimal import Decimal

import trio

from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.schwab import SchwabState, SentLog, serve_schwab_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, utc_now
from bridge.app.stats import PipelineStats
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

ACCOUNTS = ("87654321", "12345678")


async def test_account_activity_triggers_snapshots_that_match_the_broker(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats, broker = SentLog(), PipelineStats(), SchwabState(ACCOUNTS)
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(
            serve_schwab_simulator, token="sw-token", accounts=ACCOUNTS, activity_per_second=10, total_activity=25,
            heartbeat_s=0.3, log=sent, state=broker))  # fmt: skip
        feed = SchwabFeed(api_url=api, token="sw-token", clock=utc_now, poll_seconds=60)

        async def a_second_after_the_last_activity() -> None:
            while sent.messages_sent < 25:
                await trio.sleep(0.05)
            await trio.sleep(1.0)

        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now,
                                    a_second_after_the_last_activity)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert sent.extra["polls"] >= 10
    rows = query(database_url, "select a.external_account_id, p.symbol, p.qty from broker_positions p"
                               " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    assert {(a, s): int(q) for a, s, q in rows} == {key: qty for key, qty in broker.positions.items() if qty}
    cash = query(database_url, "select a.external_account_id, b.cash from broker_balances b"
                               " join broker_accounts a on a.id = b.broker_account_id")  # fmt: skip
    assert {account: Decimal(str(value)) for account, value in cash} == broker.cash


async def test_a_denied_login_is_reported_and_retried_slowly(repository: PostgresRepository) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_schwab_simulator, token="right"))
        feed = SchwabFeed(api_url=api, token="wrong", clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "refused the token (HTTP 401)" in stats.feed_last_error["schwab"]
    assert stats.feed_restarts["schwab"] == 1


async def test_a_login_the_streamer_denies_is_reported(repository: PostgresRepository) -> None:
    sent, stats = SentLog(), PipelineStats()
    async with trio.open_nursery() as nursery:
        # REST accepts the token but the streamer denies the login (e.g. an expired streamer entitlement)
        api = await nursery.start(functools.partial(serve_schwab_simulator, token="tok", streamer_token="other",
                                                    log=sent))  # fmt: skip
        feed = SchwabFeed(api_url=api, token="tok", clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "the streamer refused the login (code 3: Login denied)" in stats.feed_last_error["schwab"]
    assert sent.extra["refused"] == 1 and stats.feed_restarts["schwab"] == 1
