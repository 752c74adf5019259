"""``bridge demo``: the whole bridge on the embedded default, against the built-in simulator.

A newcomer sees the pipeline work end to end without any account or server: the local
Developer Console simulator streams realistic rows for all five tables (and a few malformed
frames, to show dead-lettering), the local Polygon/Massive simulator streams OPRA trades and
quotes, the local Benzinga simulator streams news, and local tastytrade, Tradier and Schwab servers
(streamers and REST) change broker accounts, all over loopback; the bridge ingests them into the embedded
PostgreSQL, a live view shows rates and counts, and a summary says how to query the result.
"""

from __future__ import annotations

import secrets
import signal
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table as RichTable

from bridge.adapters.simulator.server import SentLog
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.registry import FEEDS, build_feed, build_normalizers
from bridge.app.service import signal_waiter, utc_now
from bridge.app.settings import Settings
from bridge.app.stats import PipelineStats
from bridge.app.vendors.base import Simulated, SimulatorOptions
from bridge.domain.models import DATA_TABLES, Table
from bridge.domain.ports import Normalizer, Repository
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
    stats: PipelineStats, meter: RateMeter, elapsed_s: float, duration_s: float, normalizers: Mapping[str, Normalizer]
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
    return Panel(Group(feeds, tables, *normalizer_lines(normalizers)), title=title)


def normalizer_lines(normalizers: Mapping[str, Normalizer]) -> list[str]:
    """What each vendor has to say about its normalizer (the Polygon NBBO coverage)."""
    lines = (FEEDS[name].describe_normalizer(normalizer) for name, normalizer in normalizers.items())
    return [line for line in lines if line]


@attrs.frozen
class DemoResult:
    sent: Mapping[str, SentLog]
    """What each vendor's simulator sent, by feed name."""
    normalizers: Mapping[str, Normalizer]

    def summary(self) -> list[str]:
        """One line per simulator that has something to report, then the normalizers' lines."""
        lines = [spec.summarize_sent(self.sent[name]) for name, spec in FEEDS.items() if spec.summarize_sent]
        return [*lines, *normalizer_lines(self.normalizers)]


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
    settings: Settings | None = None,
) -> DemoResult:
    """Stream from every vendor's simulator into ``repository`` for ``duration_s``; return what was sent.

    ``settings`` gives the core knobs (the vendors' own are the simulators'); the defaults otherwise.
    """
    settings = settings or Settings()
    # A new session each run (the scenarios are deterministic per seed and start), so a second demo adds rows.
    options = SimulatorOptions(rate=rate, seed=secrets.randbits(32), start=utc_now())
    normalizer_map = build_normalizers(settings)
    async with trio.open_nursery() as nursery:
        simulated: dict[str, Simulated[Any]] = {}
        for name, spec in FEEDS.items():
            simulated[name] = await nursery.start(spec.simulator, options)
        vendors = {name: running.settings for name, running in simulated.items()}
        demo_settings = attrs.evolve(settings, vendors=vendors)
        for secret in demo_settings.secrets():
            REDACTOR.add(secret)
        feeds = [build_feed(name, demo_settings, utc_now) for name in FEEDS]
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
                    live.update(render(stats, meter, now - started, duration_s, normalizer_map))
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
            live.update(render(stats, meter, trio.current_time() - started, duration_s, normalizer_map))
        nursery.cancel_scope.cancel()
    return DemoResult({name: running.log for name, running in simulated.items()}, normalizer_map)
