"""The tradier feed against a local Tradier: REST snapshots, polled at once after each fill."""

from __future__ import annotations

import functools
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import trio

from bridge.adapters.credentials import check_tradier_credentials, tradier_credentials
from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.tradier import SentLog, TokenIssuer, TradierState, serve_tradier_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

ACCOUNTS = ("VA000042", "VA000043")


def settled(broker: TradierState) -> bool:
    """A poll has followed the last fill (the tables can then equal the broker)."""
    return broker.last_fill == 0 or trio.current_time() - broker.last_fill > 0.5


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


async def test_polls_and_the_events_stream_keep_going_across_rotating_refreshes(
    database_url: str, repository: PostgresRepository, tmp_path: Path
) -> None:
    sent, stats, broker = SentLog(), PipelineStats(), TradierState(ACCOUNTS)
    issuer = TokenIssuer(access_lifetime_s=0.9, rotate_refresh=True, prefix="tr")
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(
            serve_tradier_simulator, client_id="cid", client_secret="cs", refresh_token="rt-0", issuer=issuer,
            accounts=ACCOUNTS, fills_per_second=10, total_fills=25, heartbeat_s=0.5, log=sent,
            state=broker))  # fmt: skip
        credentials = tradier_credentials(api_url=api, client_id="cid", client_secret="cs", refresh_token="rt-0",
                                          clock=utc_now, home=tmp_path, stats=stats)  # fmt: skip
        feed = TradierFeed(api_url=api, credentials=credentials, accounts=ACCOUNTS, clock=utc_now, poll_seconds=0.15)

        enough = stop_when(lambda: sent.messages_sent >= 25 and sent.extra["tokens_issued"] >= 6 and settled(broker))
        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, enough)
        nursery.cancel_scope.cancel()
    assert sent.extra["tokens_issued"] >= 6
    assert sent.connections == 1 and stats.feed_restarts["tradier"] == 0
    assert sent.extra["rest_refused_expired"] == 0
    assert holdings(database_url) == {key: qty for key, qty in broker.positions.items() if qty}
    # the rotated refresh token is kept, owner-only, for the next start
    kept = tmp_path / "credentials" / "tradier.json"
    assert kept.stat().st_mode & 0o777 == 0o600 and (tmp_path / "credentials").stat().st_mode & 0o777 == 0o700
    (current,) = issuer.refresh_tokens
    assert orjson.loads(kept.read_bytes())["refresh_token"] == current != "rt-0"


async def test_a_restart_uses_the_kept_refresh_token_and_a_new_configured_one_wins(tmp_path: Path) -> None:
    issuer = TokenIssuer(access_lifetime_s=60, rotate_refresh=True, prefix="tr")
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_tradier_simulator, client_id="cid", client_secret="cs",
                                                    refresh_token="rt-0", issuer=issuer))  # fmt: skip
        settings = {"api_url": api, "client_id": "cid", "client_secret": "cs", "clock": utc_now, "home": tmp_path}
        await check_tradier_credentials(refresh_token="rt-0", **settings)  # rotates: rt-0 is dead now
        expiry = await check_tradier_credentials(refresh_token="rt-0", **settings)  # a restart: the kept one works
        assert expiry.access > utc_now() + timedelta(seconds=50) and expiry.refresh is None
        issuer.add_refresh_token("rt-new")  # an operator mints a new token and configures it
        await check_tradier_credentials(refresh_token="rt-new", **settings)
        assert issuer.refresh_tokens[-1] == orjson.loads((tmp_path / "credentials" / "tradier.json").read_bytes())[
            "refresh_token"]  # fmt: skip
        assert issuer.issued == 3
        nursery.cancel_scope.cancel()


async def test_a_refused_token_is_renewed_at_once_and_the_request_retried(repository: PostgresRepository) -> None:
    sent, stats = SentLog(), PipelineStats()
    issuer = TokenIssuer(access_lifetime_s=300, prefix="tr")
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(
            serve_tradier_simulator, client_id="cid", client_secret="cs", refresh_token="rt-0", issuer=issuer,
            fills_per_second=5, log=sent))  # fmt: skip
        credentials = tradier_credentials(api_url=api, client_id="cid", client_secret="cs", refresh_token="rt-0",
                                          clock=utc_now, stats=stats)  # fmt: skip
        feed = TradierFeed(api_url=api, credentials=credentials, accounts=("VA000042",), clock=utc_now, poll_seconds=60)

        async def revoke_after_the_first_poll() -> None:
            while sent.extra["polls"] < 1:
                await trio.sleep(0.02)
            issuer.revoke()  # the vendor invalidates the token long before its expiry

        nursery.start_soon(revoke_after_the_first_poll)
        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now,
                                    stop_when(lambda: sent.extra["polls"] >= 3))  # fmt: skip
        nursery.cancel_scope.cancel()
    assert sent.extra["rest_refused_unknown"] >= 1 and issuer.issued == 2
    assert stats.feed_restarts["tradier"] == 0


async def test_a_refused_refresh_is_a_credential_problem(repository: PostgresRepository) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_tradier_simulator, client_id="cid", client_secret="cs",
                                                    refresh_token="rt-0"))  # fmt: skip
        credentials = tradier_credentials(api_url=api, client_id="cid", client_secret="wrong", refresh_token="rt-0",
                                          clock=utc_now)  # fmt: skip
        feed = TradierFeed(api_url=api, credentials=credentials, accounts=("VA000042",), clock=utc_now, stats=stats)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "refused the refresh token (HTTP 401: invalid_client)" in stats.feed_last_error["tradier"]
    assert (
        stats.credential_problems["tradier"]
        == "the token endpoint refused the refresh token (HTTP 401: invalid_client)"
    )
    assert "wrong" not in stats.feed_last_error["tradier"] and stats.feed_restarts["tradier"] == 1
