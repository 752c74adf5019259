"""The Schwab account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.credentials import SCHWAB_TOKEN_URL, RefreshingToken, schwab_credentials
from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.simulator.schwab import serve_schwab_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.setting_types import HttpUrl, PositiveFloat, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import bridge_home, check_minted, check_rest, utc_now
from bridge.domain.normalizers.schwab import normalize_schwab
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings


@attrs.frozen
class SchwabSettings:
    token: str | None = setting(None, "Schwab OAuth access token, used as it is", secret=True, selects=True)
    app_key: str | None = setting(None, "Schwab app key (the OAuth client id, with the refresh token)")
    app_secret: str | None = setting(None, "Schwab app secret (with the refresh token)", secret=True)
    refresh_token: str | None = setting(
        None, "OAuth refresh token (7 days): access tokens are minted and renewed from it", secret=True, selects=True
    )
    token_url: HttpUrl = setting(HttpUrl(SCHWAB_TOKEN_URL), "OAuth token endpoint")
    api_url: HttpUrl = setting(
        HttpUrl("https://api.schwabapi.com/trader/v1"), "Trader API base (accounts, userPreference)"
    )
    poll_seconds: PositiveFloat = setting(PositiveFloat(5.0), "seconds between position/balance polls")


def credentials(vendor: SchwabSettings, core: Settings | None, clock: Clock) -> RefreshingToken | None:
    """The refreshing token when a refresh token is configured (it wins over a fixed token)."""
    if vendor.refresh_token is None or vendor.app_key is None or vendor.app_secret is None:
        return None
    return schwab_credentials(app_key=vendor.app_key, app_secret=vendor.app_secret, refresh_token=vendor.refresh_token,
                              clock=clock, token_url=vendor.token_url,
                              home=bridge_home() if core is None else core.home)  # fmt: skip


def extra_problems(vendor: SchwabSettings) -> list[str]:
    if vendor.refresh_token is not None:
        return [f"BRIDGE_SCHWAB_{name} is not set: the refresh token is exchanged with the app's key and secret"
                for name, value in (("APP_KEY", vendor.app_key), ("APP_SECRET", vendor.app_secret))
                if value is None]  # fmt: skip
    if vendor.token is None:
        return ["BRIDGE_SCHWAB_TOKEN or BRIDGE_SCHWAB_REFRESH_TOKEN is not set: the schwab feed needs an OAuth"
                " access token or a refresh token"]  # fmt: skip
    return []


def build_feed(vendor: SchwabSettings, core: Settings, clock: Clock) -> Feed:
    return SchwabFeed(api_url=vendor.api_url, token=vendor.token, clock=clock, poll_seconds=vendor.poll_seconds,
                      credentials=credentials(vendor, core, clock))  # fmt: skip


def build_normalizer(vendor: SchwabSettings, core: Settings) -> Normalizer:
    return normalize_schwab


async def probe(vendor: SchwabSettings) -> CheckResult:
    refreshing = credentials(vendor, None, utc_now)
    if refreshing is not None:
        return await check_minted("schwab", refreshing, f"{vendor.api_url}/userPreference")
    assert vendor.token is not None
    return await check_rest("schwab", f"{vendor.api_url}/userPreference", f"Bearer {vendor.token}")


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[SchwabSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(
            functools.partial(
                serve_schwab_simulator,
                token=token,
                activity_per_second=1,
                seed=options.seed,
                log=sent,
                host=options.host,
                port=options.port,
            )
        )
        task_status.started(Simulated(SchwabSettings(token=token, api_url=HttpUrl(api)), sent))


SPEC = FeedSpec(
    name="schwab",
    settings=SchwabSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    extra_problems=extra_problems,
)
