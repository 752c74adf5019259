"""The Benzinga news feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.feeds.benzinga import BenzingaFeed, with_token
from bridge.adapters.simulator.benzinga import serve_benzinga_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.setting_types import WebSocketUrl, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import check_websocket
from bridge.domain.normalizers.benzinga import BenzingaNormalizer
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings


@attrs.frozen
class BenzingaSettings:
    api_key: str | None = setting(
        None, "Benzinga news stream token (sent as the token query parameter)", secret=True,
        needed="the API token", selects=True,
    )  # fmt: skip
    url: WebSocketUrl = setting(
        WebSocketUrl("wss://api.benzinga.com/api/v1/news/stream"),
        "news stream URL (tickers/channels filters may be added)",
    )


def build_feed(vendor: BenzingaSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.api_key is not None
    return BenzingaFeed(url=vendor.url, api_key=vendor.api_key, clock=clock)


def build_normalizer(vendor: BenzingaSettings, core: Settings) -> Normalizer:
    return BenzingaNormalizer()  # fresh: it remembers the newest revision of each article it stored


async def probe(vendor: BenzingaSettings) -> CheckResult:
    assert vendor.api_key is not None
    return await check_websocket("benzinga", with_token(vendor.url, vendor.api_key), None)


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[BenzingaSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(
                serve_benzinga_simulator,
                token=token,
                host=options.host,
                port=options.port,
                messages_per_second=5,
                bad_frame_every=50,
                log=sent,
                seed=options.seed,
                start=options.start,
            )
        )
        task_status.started(Simulated(BenzingaSettings(api_key=token, url=WebSocketUrl(url)), sent))


def summarize(sent: SentLog) -> str:
    return (
        f"Benzinga simulator sent {sent.messages_sent:,} news messages (creations, updates, removals)"
        f" and {sent.bad_frames_sent:,} malformed one(s)."
    )


SPEC = FeedSpec(
    name="benzinga",
    settings=BenzingaSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    summarize_sent=summarize,
)
