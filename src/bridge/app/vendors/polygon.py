"""The Polygon/Massive options feed: settings, wiring, probe and simulator in one place."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from bridge.adapters.backfill.polygon import PolygonRest
from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.simulator.polygon import PolygonMarket, serve_polygon_simulator
from bridge.adapters.simulator.server import SentLog
from bridge.app.backfill import PolygonBackfiller
from bridge.app.setting_types import HttpUrl, OptionContracts, PositiveInt, TextList, WebSocketUrl, setting
from bridge.app.vendors.base import CheckResult, FeedSpec, Simulated, SimulatorOptions
from bridge.app.vendors.probes import why
from bridge.domain.backfill import PolygonBackfillNormalizer
from bridge.domain.nbbo import NbboBook
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

DEMO_QUOTE_LIMIT = 100
"""The demo streams quotes for fewer contracts than it trades, so quote subscriptions visibly rotate."""


@attrs.frozen
class PolygonSettings:
    api_key: str | None = setting(None, "Polygon/Massive API key", secret=True, needed="the API key", selects=True)
    url: WebSocketUrl = setting(WebSocketUrl("wss://socket.massive.com/options"), "options WebSocket URL")
    subscribe: str = setting("T.*", "channels to subscribe, e.g. T.* or T.O:SPY…")
    quote_contracts: TextList = setting(TextList(()), "contracts whose quotes are always streamed (comma-separated)")
    quote_limit: PositiveInt = setting(PositiveInt(1000), "contracts one connection may stream quotes for")
    rest_url: HttpUrl = setting(HttpUrl("https://api.massive.com"), "REST base (gap backfill)")
    backfill_contracts: OptionContracts = setting(
        OptionContracts(()), "contracts whose trades are backfilled after a gap (comma-separated, O: optional)"
    )
    backfill_max_contracts: PositiveInt = setting(PositiveInt(100), "most contracts one gap's backfill fetches")


def build_feed(vendor: PolygonSettings, core: Settings, clock: Clock) -> Feed:
    assert vendor.api_key is not None
    feed = PolygonFeed(
        url=vendor.url,
        api_key=vendor.api_key,
        clock=clock,
        channels=vendor.subscribe,
        quote_limit=vendor.quote_limit,
        quote_contracts=frozenset(vendor.quote_contracts),
        max_silence_s=core.max_silence_s,
    )
    feed.backfill = build_backfiller(vendor, core, feed, clock)
    return feed


def build_backfiller(vendor: PolygonSettings, core: Settings, feed: PolygonFeed, clock: Clock) -> PolygonBackfiller:
    """The gap backfill of ``feed``: REST trades of the configured and most recently traded contracts."""
    assert vendor.api_key is not None
    api_key, rest_url = vendor.api_key, vendor.rest_url
    return PolygonBackfiller(
        live=feed.protocol.live,
        rest=lambda: PolygonRest(rest_url, api_key),
        clock=clock,
        contracts=tuple(vendor.backfill_contracts),
        max_contracts=vendor.backfill_max_contracts,
        quote_max_age_ms=core.quote_max_age_ms,
    )


def build_normalizer(vendor: PolygonSettings, core: Settings) -> Normalizer:
    """The stream's normalizer, which also reads the backfill's frames (each with an NBBO book of its own)."""
    book = NbboBook(max_idle_ms=round(core.nbbo_max_idle_s * 1000), max_contracts=core.nbbo_max_contracts)
    return PolygonBackfillNormalizer(quote_max_age_ms=core.quote_max_age_ms, book=book)


async def probe(vendor: PolygonSettings) -> CheckResult:
    """Connect and authenticate as the feed would, without subscribing to anything."""
    assert vendor.api_key is not None
    try:
        with trio.fail_after(15):
            async with open_websocket_url(vendor.url, connect_timeout=10) as ws:
                await ws.get_message()  # the "connected" status
                await ws.send_message(orjson.dumps({"action": "auth", "params": vendor.api_key}).decode())
                while True:
                    for event in orjson.loads(await ws.get_message()):
                        status = event.get("status") if isinstance(event, dict) else None
                        if status == "auth_success":
                            return ("feed polygon", True, "connected and the API key was accepted")
                        if status in ("auth_failed", "auth_timeout"):
                            return ("feed polygon", False, f"API key refused ({status}: {event.get('message')})")
    except (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError, orjson.JSONDecodeError) as exc:
        return ("feed polygon", False, f"cannot connect or authenticate: {why(exc)}")


async def simulate(
    options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[PolygonSettings]] = trio.TASK_STATUS_IGNORED
) -> None:
    api_key, sent = secrets.token_urlsafe(16), SentLog()
    market = PolygonMarket(api_key)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(
                serve_polygon_simulator,
                api_key=api_key,
                host=options.host,
                port=options.port,
                events_per_second=options.rate,
                batch_size=50,
                log=sent,
                seed=options.seed,
                start=options.start,
                market=market,
            )
        )
        vendor = PolygonSettings(
            api_key=api_key, url=WebSocketUrl(url), quote_limit=PositiveInt(DEMO_QUOTE_LIMIT),
            rest_url=HttpUrl(market.base_url),
        )  # fmt: skip
        task_status.started(Simulated(vendor, sent))


def summarize(sent: SentLog) -> str:
    return f"Polygon simulator sent {sent.messages_sent:,} trades, {sent.extra['quotes']:,} quotes."


def describe_normalizer(normalizer: Normalizer) -> str | None:
    return quote_coverage(normalizer) if isinstance(normalizer, PolygonNormalizer) else None


def quote_coverage(polygon: PolygonNormalizer) -> str:
    share = polygon.trades_without_quote / polygon.trades if polygon.trades else 0.0
    return (
        f"polygon: {polygon.trades:,} trades, {polygon.quotes:,} quotes, NBBO book {len(polygon.book):,} contracts;"
        f" {polygon.trades_without_quote:,} trades ({share:.0%}) had no usable quote (side unknown)"
    )


SPEC = FeedSpec(
    name="polygon",
    settings=PolygonSettings,
    build_feed=build_feed,
    build_normalizer=build_normalizer,
    probe=probe,
    simulator=simulate,
    summarize_sent=summarize,
    describe_normalizer=describe_normalizer,
)
