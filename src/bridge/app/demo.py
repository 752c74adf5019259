"""``bridge demo``: the whole bridge on the embedded default, against the built-in simulator.

A newcomer sees the pipeline work end to end without any account or server: the local
Developer Console simulator streams realistic rows for all five tables (and a few malformed
frames, to show dead-lettering), the local Polygon/Massive simulator streams OPRA trades and
quotes, the local Benzinga simulator streams news, and local tastytrade, Tradier and Schwab servers
(streamers and REST) change broker accounts, all over loopback; the bridge ingests them into the embedded
PostgreSQL, a live view shows rates and counts, and a summary says how to query the result.
"""

from __future__ import annotations

import functools
import secrets
import signal
from collections import Counter

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table as RichTable

from bridge.adapters.feeds.benzinga import BenzingaFeed
from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.feeds.schwab import SchwabFeed
from bridge.adapters.feeds.tastytrade import TastytradeFeed
from bridge.adapters.feeds.tradier import TradierFeed
from bridge.adapters.simulator.benzinga import serve_benzinga_simulator
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.adapters.simulator.polygon import serve_polygon_simulator
from bridge.adapters.simulator.schwab import serve_schwab_simulator
from bridge.adapters.simulator.tastytrade import serve_tastytrade_simulator
from bridge.adapters.simulator.tradier import serve_tradier_simulator
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.service import normalizers, signal_waiter, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import DATA_TABLES, Table
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.ports import Feed, Repository
from bridge.logs import REDACTOR

SAMPLE_QUERY = (
    "select symbol, side, count(*) as trades, round(sum(notional)) as notional "
    "from options_flow group by symbol, side order by notional desc limit 10"
)


@attrs.define
class RateMeter:
    """Per-second rates from successive samples of monotonically growing counters."""

    previous: Counter[str] = attrs.Factory(Counter)
    rates: dict[str, float] = attrs.Factory(dict)
    at: float = 0.0

    def sample(self, now: float, counts: Counter[str]) -> None:
        elapsed = now - self.at
        if self.at and elapsed > 0:
            self.rates = {key: (counts[key] - self.previous[key]) / elapsed for key in counts}
        self.previous, self.at = Counter(counts), now


def render(
    stats: PipelineStats, meter: RateMeter, elapsed_s: float, duration_s: float, polygon: PolygonNormalizer
) -> Panel:
    feeds = RichTable("feed", "state", "frames", "frames/s", "dead-lettered", "restarts", expand=True)
    for feed in sorted(stats.feed_state):
        feeds.add_row(
            feed,
            str(stats.feed_state[feed]),
            f"{stats.frames_received[feed]:,}",
            f"{meter.rates.get('frames:' + feed, 0):,.0f}",
            f"{stats.frames_dead_lettered[feed]:,}",
            str(stats.feed_restarts[feed]),
        )
    tables = RichTable("table", "rows normalized", "rows committed", "rows/s", expand=True)
    for table in (*DATA_TABLES, Table.DEAD_LETTERS):
        tables.add_row(
            str(table),
            f"{stats.rows_normalized[table]:,}",
            f"{stats.rows_committed[table]:,}",
            f"{meter.rates.get('rows:' + table, 0):,.0f}",
        )
    title = f"Stream Bridge demo — {elapsed_s:4.0f}s / {duration_s:.0f}s (Ctrl-C stops early)"
    return Panel(Group(feeds, tables, quote_coverage(polygon)), title=title)


def quote_coverage(polygon: PolygonNormalizer) -> str:
    share = polygon.trades_without_quote / polygon.trades if polygon.trades else 0.0
    return (
        f"polygon: {polygon.trades:,} trades, {polygon.quotes:,} quotes, NBBO book {len(polygon.book):,} contracts;"
        f" {polygon.trades_without_quote:,} trades ({share:.0%}) had no usable quote (side unknown)"
    )


@attrs.frozen
class DemoResult:
    console: SentLog
    polygon: SentLog
    benzinga: SentLog
    polygon_normalizer: PolygonNormalizer


def _counters(stats: PipelineStats) -> Counter[str]:
    counts: Counter[str] = Counter()
    for feed, frames in stats.frames_received.items():
        counts["frames:" + feed] = frames
    for table, rows in stats.rows_committed.items():
        counts["rows:" + table] = rows
    return counts


async def run_demo(
    repository: Repository,
    *,
    duration_s: float,
    rate: float,
    console: Console,
    stats: PipelineStats,
    config: PipelineConfig,
) -> DemoResult:
    """Stream from the simulators into ``repository`` for ``duration_s``; return what was sent."""
    token, api_key, news_token = (secrets.token_urlsafe(16) for _ in range(3))
    for secret in (token, api_key, news_token):
        REDACTOR.add(secret)
    sent_console, sent_polygon, sent_benzinga = SentLog(), SentLog(), SentLog()
    # A new session each run (the scenarios are deterministic per seed and start), so a second demo adds rows.
    now, seed = utc_now(), secrets.randbits(32)
    normalizer_map = normalizers()
    polygon = normalizer_map["polygon"]
    assert isinstance(polygon, PolygonNormalizer)
    async with trio.open_nursery() as nursery:
        console_url = await nursery.start(
            functools.partial(
                serve_console_simulator,
                token=token,
                messages_per_second=rate / 2,
                batch_size=25,
                bad_frame_every=200,
                log=sent_console,
                seed=seed,
                start=now,
            )
        )
        polygon_url = await nursery.start(
            functools.partial(
                serve_polygon_simulator,
                api_key=api_key,
                events_per_second=rate,
                batch_size=50,
                log=sent_polygon,
                seed=seed,
                start=now,
            )
        )
        benzinga_url = await nursery.start(
            functools.partial(
                serve_benzinga_simulator,
                token=news_token,
                messages_per_second=5,
                bad_frame_every=50,
                log=sent_benzinga,
                seed=seed,
                start=now,
            )
        )
        broker_token = secrets.token_urlsafe(16)
        REDACTOR.add(broker_token)
        tasty_ws, tasty_api = await nursery.start(
            functools.partial(serve_tastytrade_simulator, token=broker_token, updates_per_second=5, seed=seed)
        )
        tradier_api = await nursery.start(
            functools.partial(serve_tradier_simulator, token=broker_token, fills_per_second=1, seed=seed)
        )
        schwab_api = await nursery.start(
            functools.partial(serve_schwab_simulator, token=broker_token, activity_per_second=1, seed=seed)
        )
        feeds: list[Feed] = [
            BenzingaFeed(url=benzinga_url, api_key=news_token, clock=utc_now),
            TastytradeFeed(
                url=tasty_ws, api_url=tasty_api, token=broker_token, accounts=("5WT00001", "5WT00002"), clock=utc_now
            ),
            TradierFeed(api_url=tradier_api, token=broker_token, accounts=("VA000042",), clock=utc_now),
            SchwabFeed(api_url=schwab_api, token=broker_token, clock=utc_now),
            ConsoleFeed(url=console_url, token=token, clock=utc_now),
            PolygonFeed(url=polygon_url, api_key=api_key, clock=utc_now, quote_limit=100),
        ]
        started = trio.current_time()
        meter = RateMeter()
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            Live(console=console, refresh_per_second=4, transient=False) as live,
        ):

            async def refresh() -> None:
                while True:
                    now = trio.current_time()
                    meter.sample(now, _counters(stats))
                    live.update(render(stats, meter, now - started, duration_s, polygon))
                    await trio.sleep(0.5)

            nursery.start_soon(refresh)
            await run_bridge(
                feeds,
                repository,
                normalizer_map,
                config,
                stats,
                utc_now,
                signal_waiter(signals, first_after_s=duration_s),
            )
            live.update(render(stats, meter, trio.current_time() - started, duration_s, polygon))
        nursery.cancel_scope.cancel()
    return DemoResult(sent_console, sent_polygon, sent_benzinga, polygon)
