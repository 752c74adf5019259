"""The Tradier account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.credentials import RefreshingToken, tradier_credentials
from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.simulator.server import SentLog
from bridge.adapters.simulator.tradier import serve_tradier_simulator
from bridge.app.setting_types import HttpUrl, PositiveFloat, TextList, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import bridge_home, check_minted, check_rest, utc_now
from bridge.domain.normalizers.tradier import normalize_tradier
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

SIMULATED_ACCOUNTS = ("VA000042",)


@attrs.frozen
class TradierSettings:
    token: str | None = setting(None, "Tradier access token, used as it is", secret=True, selects=True)
    client_id: str | None = setting(None, "OAuth client id (with the refresh token)")
    client_secret: str | None = setting(None, "OAuth client secret (with the refresh token)", secret=True)
    refresh_token: str | None = setting(
        None, "OAuth refresh token (Tradier partners): access tokens are minted from it", secret=True, selects=True
    )
    accounts: TextList = setting(TextList(()), "Tradier account ids (comma-separated)", needed="the accounts to poll")
    api_url: HttpUrl = setting(
        HttpUrl("https://api.tradier.com/v1"), "REST base (sandbox: https://sandbox.tradier.com/v1)"
    )
    poll_seconds: PositiveFloat = setting(PositiveFloat(5.0), "seconds between position/balance polls")


def credentials(vendor: TradierSettings, core: Settings | None, clock: Clock) -> RefreshingToken | None:
    """The refreshing token when a refresh token is configured (it wins over a fixed token)."""
    if vendor.refresh_token is None or vendor.client_id is None or vendor.client_secret is None:
        return None
    return tradier_credentials(api_url=vendor.api_url, client_id=vendor.client_id, client_secret=vendor.client_secret,
                               refresh_token=vendor.refresh_token, clock=clock,
                               home=bridge_home() if core is None else core.home)  # fmt: skip


def extra_problems(vendor: TradierSettings) -> list[str]:
    if vendor.refresh_token is not None:
        return [f"BRIDGE_TRADIER_{name} is not set: the refresh token is exchanged with the client's id and secret"
                for name, value in (("CLIENT_ID", vendor.client_id), ("CLIENT_SECRET", vendor.client_secret))
                if value is None]  # fmt: skip
    if vendor.token is None:
        return ["BRIDGE_TRADIER_TOKEN or BRIDGE_TRADIER_REFRESH_TOKEN is not set: the tradier feed needs an access"
                " token or a refresh token"]  # fmt: skip
    return []


def build_feed(vendor: TradierSettings, core: Settings, clock: Clock) -> Feed:
    return TradierFeed(api_url=vendor.api_url, token=vendor.token, accounts=vendor.accounts, clock=clock,
                       poll_seconds=vendor.poll_seconds, credentials=credentials(vendor, core, clock))  # fmt: skip


def build_normalizer(vendor: TradierSettings, core: Settings) -> Normalizer:
    return normalize_tradier


async def probe(vendor: TradierSettings) -> CheckResult:
    url = f"{vendor.api_url}/accounts/{vendor.accounts[0]}/balances"
    refreshing = credentials(vendor, None, utc_now)
    if refreshing is not None:
        return await check_minted("tradier", refreshing, url)
    assert vendor.token is not None
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
                host=options.host,
                port=options.port,
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
    extra_problems=extra_problems,
)
