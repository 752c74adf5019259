"""The tastytrade account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.credentials import RefreshingToken, tastytrade_credentials
from bridge.adapters.feeds.tastytrade import TastytradeFeed, authorization
from bridge.adapters.simulator.server import SentLog
from bridge.adapters.simulator.tastytrade import serve_tastytrade_simulator
from bridge.app.setting_types import HttpUrl, TextList, WebSocketUrl, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import bridge_home, check_minted, check_rest, utc_now
from bridge.domain.normalizers.tastytrade import normalize_tastytrade
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

SIMULATED_ACCOUNTS = ("5WT00001", "5WT00002")


@attrs.frozen
class TastytradeSettings:
    token: str | None = setting(None, "tastytrade OAuth access token, used as it is", secret=True, selects=True)
    client_id: str | None = setting(None, "OAuth client id, sent with the refresh token when set")
    client_secret: str | None = setting(None, "OAuth client secret (with the refresh token)", secret=True)
    refresh_token: str | None = setting(
        None, "OAuth refresh token: access tokens are minted and renewed from it", secret=True, selects=True
    )
    accounts: TextList = setting(
        TextList(()), "tastytrade account numbers to stream (comma-separated)", needed="the accounts to stream"
    )
    url: WebSocketUrl = setting(
        WebSocketUrl("wss://streamer.tastyworks.com"), "account streamer URL (sandbox: streamer.cert…)"
    )
    api_url: HttpUrl = setting(HttpUrl("https://api.tastyworks.com"), "REST base (positions and balances snapshots)")


def credentials(vendor: TastytradeSettings, core: Settings | None, clock: Clock) -> RefreshingToken | None:
    """The refreshing token when a refresh token is configured (it wins over a fixed token)."""
    if vendor.refresh_token is None or vendor.client_secret is None:
        return None
    return tastytrade_credentials(api_url=vendor.api_url, client_secret=vendor.client_secret,
                                  refresh_token=vendor.refresh_token, client_id=vendor.client_id, clock=clock,
                                  home=bridge_home() if core is None else core.home)  # fmt: skip


def extra_problems(vendor: TastytradeSettings) -> list[str]:
    if vendor.refresh_token is not None and vendor.client_secret is None:
        return ["BRIDGE_TASTYTRADE_CLIENT_SECRET is not set: the refresh token is exchanged with the client's secret"]
    if vendor.token is None and vendor.refresh_token is None:
        return ["BRIDGE_TASTYTRADE_TOKEN or BRIDGE_TASTYTRADE_REFRESH_TOKEN is not set: the tastytrade feed needs"
                " an access token or a refresh token"]  # fmt: skip
    return []


def build_feed(vendor: TastytradeSettings, core: Settings, clock: Clock) -> Feed:
    return TastytradeFeed(url=vendor.url, api_url=vendor.api_url, token=vendor.token, accounts=vendor.accounts,
                          clock=clock, credentials=credentials(vendor, core, clock))  # fmt: skip


def build_normalizer(vendor: TastytradeSettings, core: Settings) -> Normalizer:
    return normalize_tastytrade


async def probe(vendor: TastytradeSettings) -> CheckResult:
    url = f"{vendor.api_url}/accounts/{vendor.accounts[0]}/balances"
    refreshing = credentials(vendor, None, utc_now)
    if refreshing is not None:
        return await check_minted("tastytrade", refreshing, url)
    assert vendor.token is not None
    return await check_rest("tastytrade", url, authorization(vendor.token))


async def simulate(
    options: SimulatorOptions,
    *,
    task_status: trio.TaskStatus[Simulated[TastytradeSettings]] = trio.TASK_STATUS_IGNORED,
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        streamer, api = await nursery.start(
            functools.partial(
                serve_tastytrade_simulator,
                token=token,
                accounts=SIMULATED_ACCOUNTS,
                updates_per_second=5,
                seed=options.seed,
                host=options.host,
                port=options.port,
                log=sent,
            )
        )
        vendor = TastytradeSettings(token=token, accounts=TextList(SIMULATED_ACCOUNTS), url=WebSocketUrl(streamer),
                                    api_url=HttpUrl(api))  # fmt: skip
        task_status.started(Simulated(vendor, sent))


SPEC = FeedSpec(
    name="tastytrade",
    settings=TastytradeSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    extra_problems=extra_problems,
)
