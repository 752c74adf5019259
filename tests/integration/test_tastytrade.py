"""The tastytrade feed against a local streamer and REST API: the tables end equal to the broker's state."""

from __future__ import annotations

import functools
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from bridge.adapters.credentials import tastytrade_credentials
from bridge.adapters.feeds.tastytrade import TastytradeFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.tastytrade import BrokerState, SentLog, TokenIssuer, serve_tastytrade_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import Table
from bridge.domain.ports import RetryLater
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


async def test_the_stream_keeps_going_across_token_refreshes_on_one_connection(
    database_url: str, repository: PostgresRepository, tmp_path: Path
) -> None:
    """Access tokens living 0.9 s: renewed in time, handed to the open streamer with each heartbeat."""
    sent, stats, broker = SentLog(), PipelineStats(), BrokerState(ACCOUNTS)
    issuer = TokenIssuer(access_lifetime_s=0.9, prefix="tt")
    async with trio.open_nursery() as nursery:
        ws_url, api_url = await nursery.start(functools.partial(
            serve_tastytrade_simulator, client_secret="cs", refresh_token="rt-1", client_id="cid", issuer=issuer,
            accounts=ACCOUNTS, updates_per_second=80, total_updates=240, log=sent, state=broker))  # fmt: skip
        credentials = tastytrade_credentials(api_url=api_url, client_secret="cs", refresh_token="rt-1",
                                             client_id="cid", clock=utc_now, home=tmp_path, stats=stats)  # fmt: skip
        feed = TastytradeFeed(url=ws_url, api_url=api_url, credentials=credentials, accounts=ACCOUNTS, clock=utc_now,
                              heartbeat_s=0.1)  # fmt: skip
        done = lambda: (
            sent.messages_sent >= 240
            and sent.extra["tokens_issued"] >= 6
            and (
                stats.rows_committed[Table.BROKER_POSITIONS] + stats.rows_committed[Table.BROKER_BALANCES]
                >= sent.messages_sent
            )
        )
        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, stop_when(done))
        nursery.cancel_scope.cancel()
    assert sent.extra["tokens_issued"] >= 6  # at least five renewals after the first token
    assert sent.connections == 1 and stats.feed_restarts["tastytrade"] == 0  # never dropped
    assert sent.extra["expired_on_stream"] == 0 and sent.extra["tokens_handed_over"] >= 5
    assert sent.extra["rest_refused_expired"] == 0
    assert stats.credential_expiry[("tastytrade", "access")] > utc_now() - timedelta(seconds=1)
    assert "tastytrade" not in stats.credential_problems
    stored = query(database_url, "select a.external_account_id, p.symbol, p.qty from broker_positions p"
                                 " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    assert {(account, symbol): int(qty) for account, symbol, qty in stored} == {
        key: qty for key, qty in broker.positions.items() if qty != 0
    }
    # tokens are in no stored frame (dead letters) and no error
    letters = query(database_url, "select frame, reason from bridge_dead_letters")
    for secret in ("rt-1", "cs", *issuer.refresh_tokens):
        assert all(secret not in f"{frame} {reason}" for frame, reason in letters)


async def test_a_token_request_without_a_product_version_user_agent_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        _, api_url = await nursery.start(functools.partial(serve_tastytrade_simulator, client_secret="cs",
                                                           refresh_token="rt-1"))  # fmt: skip
        credentials = tastytrade_credentials(api_url=api_url, client_secret="cs", refresh_token="rt-1", clock=utc_now)
        credentials.headers = {"User-Agent": "no-version"}
        with pytest.raises(RetryLater, match=r"refused the refresh token \(HTTP 401: invalid_user_agent\)"):
            await credentials.get()
        credentials.headers = {"User-Agent": "stream-bridge/1.0"}
        assert (await credentials.mint()).refresh is None  # tastytrade does not say when a refresh token expires
        nursery.cancel_scope.cancel()
