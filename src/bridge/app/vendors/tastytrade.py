"""The tastytrade account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.feeds.tastytrade import TastytradeFeed, authorization
from bridge.adapters.simulator.server import SentLog
from bridge.adapters.simulator.tastytrade import serve_tastytrade_simulator
from bridge.app.setting_types import HttpUrl, TextList, WebSocketUrl, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import check_rest
from bridge.domain.normalizers.tastytrade import normalize_tastytrade
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

SIMULATED_ACCOUNTS = ("5WT00001", "5WT00002")


@attrs.frozen
class TastytradeSettings:
    token: str | None = setting(
        None, "tastytrade session/OAuth access token", secret=True, needed="an access token", selects=True
    )
    accounts: TextList = setting(
        TextList(()), "tastytrade account numbers to stream (comma-separated)", needed="the accounts to stream"
    )
    url: WebSocketUrl = setting(
        WebSocketUrl("wss://streamer.tastyworks.com"), "account streamer URL (sandbox: streamer.cert…)"
    )
    api_url: HttpUrl = setting(HttpUrl("https://api.tastyworks.com"), "REST base (positions and balances snapshots)")


def build_feed(vendor: TastytradeSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.token is not None
    return TastytradeFeed(url=vendor.url, api_url=vendor.api_url, token=vendor.token, accounts=vendor.accounts,
                          clock=clock)  # fmt: skip


def build_normalizer(vendor: TastytradeSettings, core: Settings) -> Normalizer:
    return normalize_tastytrade


async def probe(vendor: TastytradeSettings) -> CheckResult:
    assert vendor.token is not None
    url = f"{vendor.api_url}/accounts/{vendor.accounts[0]}/balances"
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
    fixed_address=False,
)
