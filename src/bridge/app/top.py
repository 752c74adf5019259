"""``bridge top``: a person's live view of a running bridge, read from its ``/metrics``.

It needs nothing but the bridge's HTTP port: each interval it scrapes the metrics text, and the view is
a pure function of the last two scrapes (rates are differences over the time between them). On a
terminal it redraws a rich panel; piped or in a log it prints one plain line per interval.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TextIO

import attrs
import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table as RichTable

from bridge.app.progress import bucket_quantile

SCRAPE_TIMEOUT_S: Final = 5.0
Labels = frozenset[tuple[str, str]]


class ScrapeFailed(Exception):
    """The bridge's metrics could not be read (unreachable, an HTTP error, not a metrics text)."""


@attrs.frozen
class Scrape:
    """One reading of ``/metrics``: sample name → labels → value, and when it was taken (monotonic seconds)."""

    at: float
    samples: Mapping[str, Mapping[Labels, float]]

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: defaultdict[str, dict[Labels, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][frozenset(sample.labels.items())] = sample.value
        return cls(at, dict(samples))

    def by(self, name: str, label: str) -> dict[str, float]:
        """Values of ``name`` per value of ``label``, summed over its other labels."""
        values: defaultdict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label)
            if key is not None:
                values[key] += value
        return dict(values)

    def one(self, name: str) -> float | None:
        return self.samples.get(name, {}).get(frozenset())


@attrs.frozen
class FeedLine:
    feed: str
    state: str
    frames_per_s: float | None
    dead_letters: int
    blind_s: float
    lease: str


@attrs.frozen
class TableLine:
    table: str
    committed: int
    rows_per_s: float | None


@attrs.frozen
class TopView:
    feeds: tuple[FeedLine, ...]
    tables: tuple[TableLine, ...]
    commit_p99_s: float | None
    """Received → committed p99 over the interval (over the process's life on the first scrape)."""
    journal_bytes: float | None
    journal_budget_bytes: float | None
    journal_paused: bool
    credentials: tuple[tuple[str, str, float], ...]
    """(feed, kind, seconds until expiry)."""
    interval_s: float | None


def _rate(current: float, previous: float | None, elapsed: float | None) -> float | None:
    if previous is None or not elapsed or elapsed <= 0:
        return None
    return max(0.0, current - previous) / elapsed


def _latency_p99(previous: Scrape | None, current: Scrape) -> float | None:
    def buckets(scrape: Scrape | None) -> dict[float, float]:
        if scrape is None:
            return {}
        return {float(dict(labels)["le"]): value
                for labels, value in scrape.samples.get("bridge_commit_latency_seconds_bucket", {}).items()
                if "le" in dict(labels)}  # fmt: skip

    now, before = buckets(current), buckets(previous)
    bounds = sorted(now)
    if not bounds:
        return None
    cumulative = [now[bound] - before.get(bound, 0.0) for bound in bounds]
    if any(count < 0 for count in cumulative):  # the bridge restarted between the scrapes
        cumulative = [now[bound] for bound in bounds]
    per_bucket = [count - below for count, below in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
    return bucket_quantile(bounds[:-1], per_bucket, 0.99)  # the last bound is +Inf


def build_view(previous: Scrape | None, current: Scrape) -> TopView:
    """What the view shows, from the last two scrapes (``previous`` None on the first one: no rates yet)."""
    elapsed = current.at - previous.at if previous is not None else None
    states = {dict(labels)["feed"]: dict(labels)["state"]
              for labels, value in current.samples.get("bridge_feed_state", {}).items() if value == 1}  # fmt: skip
    frames = current.by("bridge_frames_received_total", "feed")
    frames_before = previous.by("bridge_frames_received_total", "feed") if previous else {}
    dead = current.by("bridge_frames_dead_lettered_total", "feed")
    blind = current.by("bridge_feed_blind_seconds_total", "feed")
    leases = current.by("bridge_lease_held", "feed")
    feeds = tuple(
        FeedLine(
            feed,
            states.get(feed, "?"),
            _rate(frames.get(feed, 0.0), frames_before.get(feed, 0.0) if previous else None, elapsed),
            int(dead.get(feed, 0)),
            blind.get(feed, 0.0),
            ("held" if leases[feed] else "standby") if feed in leases else "-",
        )
        for feed in sorted({*states, *frames})
    )
    committed = current.by("bridge_rows_committed_total", "table")
    committed_before = previous.by("bridge_rows_committed_total", "table") if previous else {}
    tables = tuple(
        TableLine(table, int(rows), _rate(rows, committed_before.get(table, 0.0) if previous else None, elapsed))
        for table, rows in sorted(committed.items())
    )
    credentials = tuple(
        sorted(
            (dict(labels)["feed"], dict(labels)["kind"], value)
            for labels, value in current.samples.get("bridge_credential_expires_in_seconds", {}).items()
        )
    )
    return TopView(
        feeds=feeds,
        tables=tables,
        commit_p99_s=_latency_p99(previous, current),
        journal_bytes=current.one("bridge_journal_bytes"),
        journal_budget_bytes=current.one("bridge_journal_budget_bytes"),
        journal_paused=bool(current.one("bridge_journal_paused")),
        credentials=credentials,
        interval_s=elapsed,
    )


def _per_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds < 0:
        return f"expired {_duration(-seconds)} ago"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _p99(view: TopView) -> str:
    if view.commit_p99_s is None:
        return "-"
    if view.commit_p99_s == float("inf"):
        return "> 30 s"
    return f"<= {view.commit_p99_s * 1000:g} ms"


def _journal(view: TopView) -> str:
    text = f"{_size(view.journal_bytes)} / {_size(view.journal_budget_bytes)}"
    if view.journal_bytes is not None and view.journal_budget_bytes:
        text += f" ({view.journal_bytes / view.journal_budget_bytes:.0%})"
    return text + (" PAUSED" if view.journal_paused else "")


def _credentials(view: TopView) -> str:
    return ", ".join(f"{feed} {kind} {_duration(seconds)}" for feed, kind, seconds in view.credentials) or "-"


def render_line(view: TopView) -> str:
    """One plain line (no terminal): feeds | tables | latency | journal | credentials."""
    feeds = "; ".join(
        f"{f.feed} {f.state} {_per_s(f.frames_per_s)} frames/s dead={f.dead_letters} blind={f.blind_s:.0f}s"
        f" lease={f.lease}"
        for f in view.feeds
    )
    tables = ", ".join(f"{t.table} {_per_s(t.rows_per_s)}" for t in view.tables)
    return (
        f"feeds: {feeds or '-'} | rows/s: {tables or '-'} | p99 {_p99(view)} | journal {_journal(view)}"
        f" | credentials: {_credentials(view)}"
    )


def render_panel(view: TopView, url: str) -> Panel:
    """The terminal view: a table of feeds, a table of tables, then latency, journal and credentials."""
    feeds = RichTable("feed", "state", "frames/s", "dead letters", "blind s", "lease", expand=True)
    for f in view.feeds:
        feeds.add_row(f.feed, f.state, _per_s(f.frames_per_s), f"{f.dead_letters:,}", f"{f.blind_s:,.0f}", f.lease)
    tables = RichTable("table", "rows committed", "rows/s", expand=True)
    for t in view.tables:
        tables.add_row(t.table, f"{t.committed:,}", _per_s(t.rows_per_s))
    summary = f"received→committed p99: {_p99(view)}\njournal: {_journal(view)}\ncredentials: {_credentials(view)}"
    return Panel(Group(feeds, tables, summary), title=f"bridge top — {url} (Ctrl-C quits)")


def metrics_url(url: str) -> str:
    """``host:port`` or a base URL → its ``/metrics``; a URL with a path is taken as given."""
    parsed = httpx.URL(url if "://" in url else f"http://{url}")
    return str(parsed.copy_with(path="/metrics")) if parsed.path in ("", "/") else str(parsed)


def scrape(client: httpx.Client, url: str, clock: Callable[[], float] = time.monotonic) -> Scrape:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise ScrapeFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    if response.status_code != 200:
        raise ScrapeFailed(f"HTTP {response.status_code}")
    try:
        return Scrape.parse(response.text, clock())
    except ValueError as exc:
        raise ScrapeFailed(f"not a metrics text: {exc}") from exc


def _views(client: httpx.Client, url: str, interval_s: float, sleep: Callable[[float], None],
           max_scrapes: int | None) -> Iterable[TopView]:  # fmt: skip
    previous: Scrape | None = None
    scrapes = 0
    while True:
        current = scrape(client, url)
        scrapes += 1
        yield build_view(previous, current)
        if max_scrapes is not None and scrapes >= max_scrapes:
            return
        previous = current
        sleep(interval_s)


def run_top(
    url: str,
    interval_s: float,
    *,
    out: TextIO | None = None,
    max_scrapes: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Show the live view until Ctrl-C (0); 1, after one line naming the URL and the cause, if it cannot scrape."""
    target = metrics_url(url)
    console = Console(file=out or sys.stdout)
    try:
        with httpx.Client(timeout=SCRAPE_TIMEOUT_S) as client:
            views = _views(client, target, interval_s, sleep, max_scrapes)
            if console.is_terminal:
                with Live(console=console, auto_refresh=False) as live:
                    for view in views:
                        live.update(render_panel(view, target), refresh=True)
            else:
                for view in views:
                    print(render_line(view), file=console.file, flush=True)
    except ScrapeFailed as exc:
        print(f"bridge top: cannot read {target}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
