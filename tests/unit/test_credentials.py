"""The token endpoints' request shapes, the store's permissions, and secrets kept out of logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.adapters.credentials import (
    USER_AGENT,
    TokenStore,
    schwab_credentials,
    tastytrade_credentials,
    tradier_credentials,
)
from bridge.logs import REDACTOR

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def clock() -> datetime:
    return T0


def test_each_vendor_request_has_its_documented_shape() -> None:
    tasty = tastytrade_credentials(api_url="https://api.tastyworks.com/", client_secret="s3cret", refresh_token="rt1",
                                   client_id="cid", clock=clock)  # fmt: skip
    assert tasty.endpoint.url == "https://api.tastyworks.com/oauth/token"
    assert tasty.endpoint.request("rt1") == {
        "json": {"grant_type": "refresh_token", "refresh_token": "rt1", "client_secret": "s3cret", "client_id": "cid"}
    }
    without_id = tastytrade_credentials(api_url="https://x", client_secret="s3cret", refresh_token="rt1", clock=clock)
    assert "client_id" not in without_id.endpoint.request("rt1")["json"]
    assert tasty.endpoint.access_lifetime == timedelta(minutes=15)
    schwab = schwab_credentials(app_key="key1", app_secret="sec1", refresh_token="rt2", clock=clock)
    assert schwab.endpoint.url == "https://api.schwabapi.com/v1/oauth/token"
    assert schwab.endpoint.request("rt2") == {
        "data": {"grant_type": "refresh_token", "refresh_token": "rt2"},
        "auth": ("key1", "sec1"),
    }
    assert (schwab.endpoint.access_lifetime, schwab.endpoint.refresh_lifetime) == (
        timedelta(minutes=30), timedelta(days=7))  # fmt: skip
    tradier = tradier_credentials(api_url="https://api.tradier.com/v1", client_id="cid2", client_secret="sec2",
                                  refresh_token="rt3", clock=clock)  # fmt: skip
    assert tradier.endpoint.url == "https://api.tradier.com/v1/oauth/refreshtoken"
    assert tradier.endpoint.request("rt3")["auth"] == ("cid2", "sec2")
    assert "/" in USER_AGENT and " " not in USER_AGENT  # product/version, as tastytrade requires


def test_the_store_is_owner_only_and_keyed_by_the_configured_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "credentials")
    store.save("tradier", "seed-a", "rotated-1", T0)
    assert (tmp_path / "credentials" / "tradier.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o700
    assert store.load("tradier", "seed-a") == ("rotated-1", T0)
    assert store.load("tradier", "seed-b") is None  # a newly configured refresh token wins
    assert store.load("schwab", "seed-a") is None
    (tmp_path / "credentials" / "tradier.json").write_text("{broken")
    assert store.load("tradier", "seed-a") is None


def test_configured_secrets_are_masked_in_logs() -> None:
    tastytrade_credentials(api_url="https://x", client_secret="client-secret-xyz", refresh_token="refresh-abc-123",
                           clock=clock)  # fmt: skip
    line = REDACTOR.redact("refresh failed for refresh-abc-123 with client-secret-xyz")
    assert "refresh-abc-123" not in line and "client-secret-xyz" not in line


# --- renewal timing on trio's virtual clock, against an in-memory token endpoint ---

import httpx  # noqa: E402
import pytest  # noqa: E402
import trio  # noqa: E402
import trio.testing  # noqa: E402

from bridge.adapters.credentials import RefreshingToken, TokenEndpoint  # noqa: E402
from bridge.domain.ports import RetryLater  # noqa: E402


class Endpoint:
    """A token endpoint: answers with 60-second tokens, or the statuses queued in ``failures``."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.failures: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(trio.current_time())
        if self.failures:
            status = self.failures.pop(0)
            return httpx.Response(status, json={"error": "invalid_grant" if status == 400 else "busy"})
        return httpx.Response(200, json={"access_token": f"at-{len(self.calls)}", "expires_in": 60})


def virtual_clock() -> datetime:
    return T0 + timedelta(seconds=trio.current_time())


class Stats:
    def __init__(self) -> None:
        self.credential_expiry: dict[tuple[str, str], datetime] = {}
        self.credential_problems: dict[str, str] = {}


def token(endpoint: Endpoint, stats: Stats | None = None) -> RefreshingToken:
    return RefreshingToken("tradier", TokenEndpoint("https://vendor.invalid/token", "secret", "cid"), "rt",
                           virtual_clock, stats=stats, transport=httpx.MockTransport(endpoint))  # fmt: skip


async def test_concurrent_users_share_one_exchange(autojump_clock: trio.testing.MockClock) -> None:
    endpoint = Endpoint()
    credentials = token(endpoint)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(lambda: _append(got, credentials))
    assert got == ["at-1"] * 5 and len(endpoint.calls) == 1


async def _append(got: list[str], credentials: RefreshingToken) -> None:
    got.append(await credentials.get())


async def test_renewed_a_third_of_its_lifetime_early_and_expiry_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoint, stats = Endpoint(), Stats()
    credentials = token(endpoint, stats)
    with trio.move_on_after(130):
        await credentials.keep_fresh()
    assert endpoint.calls == [0.0, 40.0, 80.0, 120.0]  # 60-second tokens, renewed 20 s early
    assert stats.credential_expiry[("tradier", "access")] == T0 + timedelta(seconds=180)
    assert stats.credential_problems == {}


async def test_a_failing_endpoint_is_retried_while_the_token_lasts(autojump_clock: trio.testing.MockClock) -> None:
    endpoint, stats = Endpoint(), Stats()
    credentials = token(endpoint, stats)
    assert await credentials.get() == "at-1"
    endpoint.failures = [503, 503, 503]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(credentials.keep_fresh)
        await trio.sleep(41)  # due at 40 s: 503, retried after 1 s (503 again), next after 2 s more
        assert await credentials.get() == "at-1"  # its own try fails too: the still valid token serves
        problem = "renewing the access token failed (TokenEndpointUnavailable: HTTP 503: busy)"
        assert stats.credential_problems["tradier"] == problem
        await trio.sleep(3)
        assert await credentials.get() == "at-5"
        nursery.cancel_scope.cancel()
    assert endpoint.calls == [0.0, 40.0, 41.0, 41.0, 43.0] and stats.credential_problems == {}


async def test_a_refused_token_is_renewed_once_even_when_several_see_it(autojump_clock: trio.testing.MockClock) -> None:
    endpoint = Endpoint()
    credentials = token(endpoint)
    first = await credentials.get()
    await credentials.refused(first, "HTTP 401")
    await credentials.refused(first, "HTTP 401")  # a second request with the old token: already renewed
    assert await credentials.get() == "at-2" and len(endpoint.calls) == 2
    endpoint.failures = [400]
    with pytest.raises(RetryLater, match=r"refused the refresh token \(HTTP 400: invalid_grant\)"):
        await credentials.refused("at-2", "HTTP 401")
