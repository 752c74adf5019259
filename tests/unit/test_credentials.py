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
