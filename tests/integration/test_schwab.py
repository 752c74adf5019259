"""The schwab feed against a local Schwab: streamer login, account activity, REST snapshots."""

from __future__ import annotations

import functools
import hashlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from bridge.adapters.credentials import TokenStore, check_schwab_credentials, schwab_credentials
from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.schwab import SchwabState, SentLog, TokenIssuer, serve_schwab_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.ports import RetryLater
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


async def test_polls_and_the_streamer_keep_going_across_token_refreshes(
    database_url: str, repository: PostgresRepository, tmp_path: Path
) -> None:
    sent, stats, broker = SentLog(), PipelineStats(), SchwabState(ACCOUNTS)
    issuer = TokenIssuer(access_lifetime_s=0.9, refresh_lifetime_s=7 * 86400, prefix="sw")
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(
            serve_schwab_simulator, app_key="key", app_secret="secret", refresh_token="rt-0", issuer=issuer,
            accounts=ACCOUNTS, activity_per_second=10, total_activity=25, heartbeat_s=0.3, log=sent,
            state=broker))  # fmt: skip
        credentials = schwab_credentials(app_key="key", app_secret="secret", refresh_token="rt-0", clock=utc_now,
                                         token_url=api.replace("/trader/v1", "/v1/oauth/token"), home=tmp_path,
                                         stats=stats)  # fmt: skip
        feed = SchwabFeed(api_url=api, credentials=credentials, clock=utc_now, poll_seconds=0.15)

        last = [0.0, 0]

        def enough() -> bool:  # every activity sent, six tokens issued, and half a second since the last activity
            if sent.messages_sent != last[1]:
                last[:] = [trio.current_time(), sent.messages_sent]
            return sent.messages_sent >= 25 and sent.extra["tokens_issued"] >= 6 and trio.current_time() - last[0] > 0.5

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, stop_when(enough))
        nursery.cancel_scope.cancel()
    assert sent.extra["tokens_issued"] >= 6
    assert sent.connections == 1 and stats.feed_restarts["schwab"] == 0
    assert sent.extra["rest_refused_expired"] == 0
    rows = query(database_url, "select a.external_account_id, p.symbol, p.qty from broker_positions p"
                               " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    assert {(a, s): int(q) for a, s, q in rows} == {key: qty for key, qty in broker.positions.items() if qty}
    refresh_expiry = stats.credential_expiry[("schwab", "refresh")]
    assert timedelta(days=6, hours=23) < refresh_expiry - utc_now() <= timedelta(days=7)
    assert "schwab" not in stats.credential_problems


async def test_a_refresh_token_within_a_day_of_expiry_is_reported(tmp_path: Path) -> None:
    stats = PipelineStats()
    issued = utc_now() - timedelta(days=6, hours=12)
    TokenStore(tmp_path / "credentials").save("schwab", hashlib.sha256(b"rt-0").hexdigest(), "rt-0", issued)
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_schwab_simulator, app_key="key", app_secret="secret",
                                                    refresh_token="rt-0"))  # fmt: skip
        expiry = await check_schwab_credentials(app_key="key", app_secret="secret", refresh_token="rt-0",
                                                clock=utc_now, token_url=api.replace("/trader/v1", "/v1/oauth/token"),
                                                home=tmp_path, stats=stats)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert expiry.refresh == issued + timedelta(days=7)
    assert stats.credential_expiry[("schwab", "refresh")] == issued + timedelta(days=7)
    problem = stats.credential_problems["schwab"]
    assert problem.startswith(f"the refresh token expires at {expiry.refresh.isoformat()} (in 12.0 h)")


async def test_an_expired_refresh_token_is_refused_as_schwab_does(tmp_path: Path) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_schwab_simulator, app_key="key", app_secret="secret",
                                                    refresh_token="rt-0", refresh_lifetime_s=0.2))  # fmt: skip
        await trio.sleep(0.3)
        with pytest.raises(RetryLater, match=r"refused the refresh token \(HTTP 400: invalid_client\)"):
            token_url = api.replace("/trader/v1", "/v1/oauth/token")
            await check_schwab_credentials(app_key="key", app_secret="secret", refresh_token="rt-0", clock=utc_now,
                                           token_url=token_url, stats=stats)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert "refused the refresh token" in stats.credential_problems["schwab"]
