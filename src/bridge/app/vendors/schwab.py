"""The Schwab account feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.simulator.schwab import serve_schwab_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.setting_types import HttpUrl, PositiveFloat, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import check_rest
from bridge.domain.normalizers.schwab import normalize_schwab
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings


@attrs.frozen
class SchwabSettings:
    token: str | None = setting(
        None, "Schwab OAuth access token", secret=True, needed="an OAuth access token", selects=True
    )
    api_url: HttpUrl = setting(
        HttpUrl("https://api.schwabapi.com/trader/v1"), "Trader API base (accounts, userPreference)"
    )
    poll_seconds: PositiveFloat = setting(PositiveFloat(5.0), "seconds between position/balance polls")


def build_feed(vendor: SchwabSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.token is not None
    return SchwabFeed(api_url=vendor.api_url, token=vendor.token, clock=clock, poll_seconds=vendor.poll_seconds)


def build_normalizer(vendor: SchwabSettings, core: Settings) -> Normalizer:
    return normalize_schwab


async def probe(vendor: SchwabSettings) -> CheckResult:
    assert vendor.token is not None
    return await check_rest("schwab", f"{vendor.api_url}/userPreference", f"Bearer {vendor.token}")


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[SchwabSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        api = await nursery.start(
            functools.partial(serve_schwab_simulator, token=token, activity_per_second=1, seed=options.seed, log=sent)
        )
        task_status.started(Simulated(SchwabSettings(token=token, api_url=HttpUrl(api)), sent))


SPEC = FeedSpec(
    name="schwab",
    settings=SchwabSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    fixed_address=False,
)
