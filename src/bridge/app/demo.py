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
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

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
from bridge.domain.models import DATA_TABLES, Normalized, ReceivedFrame, Table
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


@attrs.define
class FeedTally:
    """What one feed's normalizer made of the frames it was given during the demo."""

    frames: int = 0
    with_rows: int = 0
    """Frames that became rows only."""
    dead_lettered: int = 0
    """Frames with at least one dead letter (a frame may hold good messages too)."""
    without_rows: int = 0
    """Frames that became nothing: protocol (status, heartbeats), quotes only, an unchanged state."""
    rows: Counter[Table] = attrs.Factory(Counter)


@attrs.frozen
class CountingNormalizer:
    """A feed's normalizer, counting what each frame became (the demo's reconciliation needs it per feed)."""

    inner: Normalizer
    tally: FeedTally

    def __call__(self, frame: ReceivedFrame) -> Normalized:
        self.tally.frames += 1
        try:
            normalized = self.inner(frame)
        except Exception:
            self.tally.dead_lettered += 1  # the pipeline dead-letters the frame as a normalizer_error
            raise
        if normalized.dead_letters:
            self.tally.dead_lettered += 1
        elif normalized.rows:
            self.tally.with_rows += 1
        else:
            self.tally.without_rows += 1
        self.tally.rows.update(row.table for row in normalized.rows)
        return normalized


def feed_lines(name: str, sent: SentLog, tally: FeedTally, stats: PipelineStats) -> list[str]:
    """One feed's reconciliation: what its simulator sent, what the bridge received and what became of it.

    Frames: ``received = became rows + dead-lettered + no row + left in the journal``. Sent and received
    differ by the frames still on the socket when the feed stopped reading, and by the frames a simulator
    does not count as data: the protocol's own (status, auth and subscription replies, heartbeats) and
    the REST snapshots a broker feed takes. Rows: what the frames sent held, against what was made.
    """
    tables = {str(table) for table in DATA_TABLES}
    received = stats.frames_received[name]
    dead = stats.frames_dead_lettered[name]
    before_normalizer = max(0, dead - tally.dead_lettered)  # not UTF-8, oversized: dead-lettered unread
    left = max(0, received - tally.frames - before_normalizer)
    events = sum(count for kind, count in sent.messages_by_table.items() if kind not in tables)
    head = f"{name}: sent {sent.frames_sent:,} frame(s), {sent.bad_frames_sent:,} malformed on purpose"
    if events:
        kinds = " and ".join(sorted(kind for kind in sent.messages_by_table if kind not in tables))
        head += f", {events:,} {kinds} event(s) (no row of their own: each makes the feed take a REST snapshot)"
    lines = [
        head,
        f"  received {received:,} = {tally.with_rows:,} became rows + {dead:,} dead-lettered + "
        f"{tally.without_rows:,} no row + {left:,} left in the journal",
    ]
    if dead:
        others = dead - sent.bad_frames_sent
        lines.append(f"  dead-lettered: the {sent.bad_frames_sent:,} malformed frame(s) sent on purpose"
                     + (f", and {others:+,} whose reasons are in bridge_dead_letters" if others else ""))  # fmt: skip
    protocol = tally.without_rows - min(events, tally.without_rows)
    if tally.without_rows:
        lines.append(f"  no row: {protocol:,} protocol frame(s) (status, auth and subscription replies, heartbeats,"
                     " snapshots that changed nothing)" + (f" and {events:,} event(s)" if events else ""))  # fmt: skip
    from_simulator = tally.with_rows + dead + min(events, tally.without_rows) + left
    unread = sent.frames_sent - from_simulator
    if unread > 0:
        lines.append(f"  not received: {unread:,} frame(s) still on the socket when the feed stopped reading")
    elif unread < 0:
        lines.append(f"  made by the feed: {-unread:,} REST snapshot frame(s), which became rows")
    parts = []
    for table in sorted({*tally.rows, *(Table(kind) for kind in sent.messages_by_table if kind in tables)}):
        made, meant = tally.rows[table], sent.messages_by_table[str(table)]
        note = ""
        if made < meant:
            note = f" of {meant:,} sent ({meant - made:,} in the frames still on the socket)"
        elif made > meant:
            note = f" ({meant:,} streamed, {made - meant:,} from REST snapshots)" if meant else " (REST snapshots)"
        parts.append(f"{table} {made:,}{note}")
    lines.append("  rows made: " + (", ".join(parts) or "none"))
    return lines


CHANGED_IN_PLACE: Final[Mapping[Table, str]] = {
    Table.NEWS_EVENTS: "a story's update or removal, applied to the stored story",
    Table.BROKER_ACCOUNTS: "an account already there",
    Table.BROKER_POSITIONS: "a position's newer state, or a closed position deleted",
    Table.BROKER_BALANCES: "an account's newer balances",
}
"""What a change that does not add a row is, per table (``options_flow`` is insert-only)."""


def table_line(table: Table, stats: PipelineStats, before: int, after: int) -> str:
    """One table's reconciliation: rows made → committed → new or changed → what the table grew by."""
    committed = stats.rows_committed[table]
    grew = after - before
    if table is Table.DEAD_LETTERS:
        return (f"{table}: {committed:,} committed (one per dead-lettered frame, and one per row the database"
                f" refused); the table grew by {grew:,}")  # fmt: skip
    made = stats.rows_normalized[table]
    refused = stats.rows_rejected_by_database[table]
    in_flight = made - committed - refused
    written = stats.rows_written[table]
    same = committed - written
    parts = [f"{table}: {made:,} made → {committed:,} committed"]
    if refused:
        parts.append(f"{refused:,} refused by the database (dead-lettered with its reason)")
    if in_flight:
        parts.append(f"{in_flight:,} not committed at stop (refused before writing, or left in the journal)")
    parts.append(f"{written:,} new or changed")
    if same:
        why = (
            "duplicates, merged by their idempotent ids"
            if table is Table.OPTIONS_FLOW
            else "the state stored already, or older"
        )
        parts.append(f"{same:,} repeated what was stored ({why})")
    if grew < written:
        parts.append(f"the table grew by {grew:,} (the other {written - grew:,} changes: "
                     f"{CHANGED_IN_PLACE.get(table, 'a row already there')})")  # fmt: skip
    elif grew > written:
        parts.append(f"the table grew by {grew:,} ({grew - written:,} created on first sight by position or balance"
                     " rows)")  # fmt: skip
    else:
        parts.append(f"the table grew by {grew:,}")
    return "; ".join(parts)


@attrs.frozen
class DemoResult:
    sent: Mapping[str, SentLog]
    """What each vendor's simulator sent, by feed name."""
    normalizers: Mapping[str, Normalizer]
    tallies: Mapping[str, FeedTally] = attrs.Factory(dict)
    """What each feed's normalizer made of the frames, by feed name."""

    def summary(self) -> list[str]:
        """One line per simulator that has something to report, then the normalizers' lines."""
        lines = [spec.summarize_sent(self.sent[name]) for name, spec in FEEDS.items() if spec.summarize_sent]
        return [*lines, *normalizer_lines(self.normalizers)]

    def reconciliation(self, stats: PipelineStats) -> list[str]:
        """Per feed: sent, received, and what became of each frame."""
        lines: list[str] = []
        for name in FEEDS:
            if name in self.sent:
                lines += feed_lines(name, self.sent[name], self.tallies.get(name, FeedTally()), stats)
        return lines


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
    tallies = {name: FeedTally() for name in normalizer_map}
    counting: dict[str, Normalizer] = {
        name: CountingNormalizer(normalizer, tallies[name]) for name, normalizer in normalizer_map.items()
    }
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
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # piped, rich would print the view once, at the end: plain lines show the run as it goes instead
            live_view = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
            with live_view or nullcontext():

                async def refresh() -> None:
                    while True:
                        now = trio.current_time()
                        meter.sample(now, _counters(stats))
                        if live_view is not None:
                            live_view.update(render(stats, meter, now - started, duration_s, normalizer_map))
                        await trio.sleep(0.5)

                async def print_progress() -> None:
                    every = max(1.0, min(5.0, duration_s / 5))
                    while True:
                        await trio.sleep(every)
                        console.print(progress_line(stats, meter, trio.current_time() - started, duration_s),
                                      highlight=False, soft_wrap=True)  # fmt: skip

                nursery.start_soon(refresh)
                if live_view is None:
                    nursery.start_soon(print_progress)
                await run_bridge(
                    feeds,
                    repository,
                    counting,
                    config,
                    stats,
                    utc_now,
                    signal_waiter(signals, first_after_s=duration_s),
                )
                if live_view is not None:
                    live_view.update(render(stats, meter, trio.current_time() - started, duration_s, normalizer_map))
        nursery.cancel_scope.cancel()
    return DemoResult({name: running.log for name, running in simulated.items()}, normalizer_map, tallies)


def progress_line(stats: PipelineStats, meter: RateMeter, elapsed_s: float, duration_s: float) -> str:
    """The live view in one plain line, for output that is not a terminal."""
    frames = sum(stats.frames_received.values())
    committed = sum(count for table, count in stats.rows_committed.items() if table is not Table.DEAD_LETTERS)
    frame_rate = sum(rate for key, rate in meter.rates.items() if key.startswith("frames:"))
    row_rate = sum(
        rate for key, rate in meter.rates.items() if key.startswith("rows:") and key != "rows:" + Table.DEAD_LETTERS
    )
    return (
        f"{elapsed_s:4.0f}s / {duration_s:.0f}s: {frames:,} frames received ({frame_rate:,.0f}/s),"
        f" {committed:,} rows committed ({row_rate:,.0f}/s), {sum(stats.frames_dead_lettered.values()):,} frames"
        f" dead-lettered"
    )


def next_steps(home: Path) -> list[str]:
    """What to do after the demo: real feeds, where the data lives, how to start over."""
    return [
        "",
        "Next:",
        "  Run against real feeds: set DATABASE_URL (a Supabase or any PostgreSQL URL; unset, the embedded one is"
        " used) and each feed's credentials, e.g. BRIDGE_POLYGON_API_KEY, BRIDGE_BENZINGA_API_KEY,"
        " BRIDGE_CONSOLE_URL + BRIDGE_CONSOLE_TOKEN, BRIDGE_TRADIER_TOKEN + BRIDGE_TRADIER_ACCOUNTS"
        " (README.md, Configuration, lists them all); `bridge check` tries them, then `bridge run`.",
        "  The service against one simulator: `bridge simulate polygon` in one shell, paste the export lines it"
        " prints into another, then `bridge run` (and `bridge top` in a third).",
        f"  The data lives in BRIDGE_HOME ({home}): the embedded database in pgdata/, the journal of `bridge run`"
        " in journal/.",
        f"  Start over: stop every bridge using it, then delete BRIDGE_HOME (rm -rf {home}).",
    ]
