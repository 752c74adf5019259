"""The brokers' refresh-token settings: they select a feed by themselves, name what is missing, and give
the feed a refreshing token (which wins over a fixed one)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bridge.adapters.credentials import RefreshingToken, StaticToken
from bridge.app.registry import build_feed
from bridge.app.service import utc_now
from bridge.app.settings import feed_problems, load_settings, selected_feeds

REFRESHING = {
    "tastytrade": {"BRIDGE_TASTYTRADE_REFRESH_TOKEN": "rt", "BRIDGE_TASTYTRADE_CLIENT_SECRET": "cs",
                   "BRIDGE_TASTYTRADE_ACCOUNTS": "5WT00001"},
    "tradier": {"BRIDGE_TRADIER_REFRESH_TOKEN": "rt", "BRIDGE_TRADIER_CLIENT_ID": "cid",
                "BRIDGE_TRADIER_CLIENT_SECRET": "cs", "BRIDGE_TRADIER_ACCOUNTS": "VA1"},
    "schwab": {"BRIDGE_SCHWAB_REFRESH_TOKEN": "rt", "BRIDGE_SCHWAB_APP_KEY": "key", "BRIDGE_SCHWAB_APP_SECRET": "cs"},
}  # fmt: skip


@pytest.mark.parametrize("feed", sorted(REFRESHING))
def test_refresh_token_settings_alone_select_the_feed_with_a_refreshing_token(feed: str, tmp_path: Path) -> None:
    environ = {**REFRESHING[feed], "BRIDGE_HOME": str(tmp_path), f"BRIDGE_{feed.upper()}_TOKEN": "fixed"}
    settings = load_settings(environ)
    assert selected_feeds(settings) == [feed] and feed_problems(settings, [feed]) == []
    built = build_feed(feed, settings, utc_now)
    credentials = built.credentials  # type: ignore[attr-defined]
    assert isinstance(credentials, RefreshingToken)  # the refresh token wins over the fixed token
    assert credentials.store is not None and credentials.store.directory == tmp_path / "credentials"
    fixed = build_feed(feed, load_settings({f"BRIDGE_{feed.upper()}_TOKEN": "fixed", **{
        k: v for k, v in REFRESHING[feed].items() if k.endswith("ACCOUNTS")}}), utc_now)  # fmt: skip
    assert isinstance(fixed.credentials, StaticToken)  # type: ignore[attr-defined]


def test_schwab_token_url_default_and_lifetimes() -> None:
    built = build_feed("schwab", load_settings(REFRESHING["schwab"]), utc_now)
    endpoint = built.credentials.endpoint  # type: ignore[attr-defined]
    assert endpoint.url == "https://api.schwabapi.com/v1/oauth/token"
    assert endpoint.refresh_lifetime == timedelta(days=7)
    custom = load_settings({**REFRESHING["schwab"], "BRIDGE_SCHWAB_TOKEN_URL": "http://127.0.0.1:9/token"})
    assert build_feed("schwab", custom, utc_now).credentials.endpoint.url == "http://127.0.0.1:9/token"  # type: ignore[attr-defined]


def test_what_is_missing_is_named() -> None:
    settings = load_settings({"BRIDGE_TRADIER_REFRESH_TOKEN": "rt", "BRIDGE_TRADIER_ACCOUNTS": "VA1",
                              "BRIDGE_SCHWAB_REFRESH_TOKEN": "rt", "BRIDGE_SCHWAB_APP_KEY": "k",
                              "BRIDGE_TASTYTRADE_REFRESH_TOKEN": "rt", "BRIDGE_TASTYTRADE_ACCOUNTS": "A"})  # fmt: skip
    problems = feed_problems(settings, ["tastytrade", "tradier", "schwab"])
    assert problems == [
        "BRIDGE_TASTYTRADE_CLIENT_SECRET is not set: the refresh token is exchanged with the client's secret",
        "BRIDGE_TRADIER_CLIENT_ID is not set: the refresh token is exchanged with the client's id and secret",
        "BRIDGE_TRADIER_CLIENT_SECRET is not set: the refresh token is exchanged with the client's id and secret",
        "BRIDGE_SCHWAB_APP_SECRET is not set: the refresh token is exchanged with the app's key and secret",
    ]
    nothing = load_settings({"BRIDGE_FEEDS": "schwab"})
    assert feed_problems(nothing, ["schwab"]) == [
        "BRIDGE_SCHWAB_TOKEN or BRIDGE_SCHWAB_REFRESH_TOKEN is not set: the schwab feed needs an OAuth access token"
        " or a refresh token"
    ]
