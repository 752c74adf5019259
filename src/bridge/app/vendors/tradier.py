"""The Tradier account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.simulator.server import SentLog
from bridge.adapters.simulator.tradier import serve_tradier_simulator
from bridge.app.setting_types import HttpUrl, PositiveFloat, TextList, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import check_rest
from bridge.domain.normalizers.tradier import normalize_tradier
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

SIMULATED_ACCOUNTS = ("VA000042",)


@attrs.frozen
class TradierSettings:
    token: str | None = setting(None, "Tradier access token", secret=True, needed="an access token", selects=True)
    accounts: TextList = setting(TextList(()), "Tradier account ids (comma-separated)", needed="the accounts to poll")
    api_url: HttpUrl = setting(
        HttpUrl("https://api.tradier.com/v1"), "REST base (sandbox: https://sandbox.tradier.com/v1)"
    )
    poll_seconds: PositiveFloat = setting(PositiveFloat(5.0), "seconds between position/balance polls")


def build_feed(vendor: TradierSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.token is not None
    return TradierFeed(api_url=vendor.api_url, token=vendor.token, accounts=vendor.accounts, clock=clock,
                       poll_seconds=vendor.poll_seconds)  # fmt: skip


def build_normalizer(vendor: TradierSettings, core: Settings) -> Normalizer:
    return normalize_tradier


async def probe(vendor: TradierSettings) -> CheckResult:
    assert vendor.token is not None
    url = f"{vendor.api_url}/accounts/{vendor.accounts[0]}/balances"
    return await check_rest("tradier", url, f"Bearer {vendor.token}")


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[TradierSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(
            functools.partial(
                serve_tradier_simulator,
                token=token,
                accounts=SIMULATED_ACCOUNTS,
                fills_per_second=1,
                seed=options.seed,
                log=sent,
            )
        )
        vendor = TradierSettings(token=token, accounts=TextList(SIMULATED_ACCOUNTS), api_url=HttpUrl(api))
        task_status.started(Simulated(vendor, sent))


SPEC = FeedSpec(
    name="tradier",
    settings=TradierSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    fixed_address=False,
)
