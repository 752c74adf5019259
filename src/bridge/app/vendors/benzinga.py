"""The Benzinga news feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import trio

from bridge.adapters.backfill.benzinga import BenzingaNews
from bridge.adapters.feeds.benzinga import BenzingaFeed, with_token
from bridge.adapters.simulator.benzinga import BenzingaNewsApi, serve_benzinga_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.backfill import BenzingaBackfiller
from bridge.app.setting_types import HttpUrl, WebSocketUrl, setting
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
    rest_url: HttpUrl = setting(HttpUrl("https://api.benzinga.com"), "news REST base (gap backfill, /api/v2/news)")


def build_feed(vendor: BenzingaSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.api_key is not None
    feed = BenzingaFeed(url=vendor.url, api_key=vendor.api_key, clock=clock)
    feed.backfill = build_backfiller(vendor, feed, clock)
    return feed


def build_backfiller(vendor: BenzingaSettings, feed: BenzingaFeed, clock: Clock) -> BenzingaBackfiller:
    """The gap backfill of ``feed``: REST news updated since just before the newest update it had seen."""
    assert vendor.api_key is not None
    token, rest_url, protocol = vendor.api_key, vendor.rest_url, feed.protocol
    return BenzingaBackfiller(
        news=lambda: BenzingaNews(rest_url, token),
        clock=clock,
        newest_seen=lambda: protocol.newest_before_connection,
        replay_covered=protocol.replay_covered,
    )


def build_normalizer(vendor: BenzingaSettings, core: Settings) -> Normalizer:
    return BenzingaNormalizer()  # fresh: it remembers the newest revision of each article it stored


async def probe(vendor: BenzingaSettings) -> CheckResult:
    assert vendor.api_key is not None
    return await check_websocket("benzinga", with_token(vendor.url, vendor.api_key), None)


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[BenzingaSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    token, sent = secrets.token_urlsafe(16), SentLog()
    news_api = BenzingaNewsApi(token)
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
                news_api=news_api,
            )
        )
        vendor = BenzingaSettings(api_key=token, url=WebSocketUrl(url), rest_url=HttpUrl(news_api.base_url))
        task_status.started(Simulated(vendor, sent))


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
