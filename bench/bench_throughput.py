"""Throughput, latency and memory of `bridge run` on the Polygon firehose, beside the machine's own limits.

    python bench/bench_throughput.py [--trades 600000] [--rates 1000,5000,20000] [--rate-seconds 20]
                                     [--outage-seconds 60] [--batch-sizes 1000,5000,20000]
                                     [--fsync-ms 1,5,20,100] [--ab-src OTHER/src] [--ab-pairs 3]
                                     [--contracts 200] [--database-url URL] [--skip PART,...]

In one run, on this machine, with PostgreSQL on the same machine (embedded unless --database-url):

  ceiling   a plain COPY of the same rows (the full-speed run's frames, normalized), already in
            memory as tuples, from this Python process, in one statement;
  naive     one INSERT per trade (what users write first), autocommit, on a 5,000-trade sample;
  full      `bridge run` as a separate process, fed by the local Polygon simulator at full speed
            (frames encoded before the clock starts, so the sender costs little): trades/s from the
            first frame sent to the last row committed, CPU seconds of the bridge and of PostgreSQL,
            peak RSS;
  rates     the same at fixed rates: received → committed latency p50/p99/max per row (PostgreSQL's
            commit timestamp minus the bridge's received_at; needs track_commit_timestamp, which
            the embedded server gets), peak RSS;
  outage    5,000 trades/s with the database cut off (a TCP proxy) for --outage-seconds: peak RSS
            and journal size while the journal holds what the database cannot take, and how long it
            takes to catch up once the database is back;
  batches   full speed again at each BRIDGE_BATCH_MAX_ROWS (the batch-size scaling law);
  fsync     at each BRIDGE_JOURNAL_FSYNC_MS: full speed, and the latency at 5,000 trades/s;
  ab        with --ab-src: full speed of this checkout's bridge and of the other one's, alternated
            in --ab-pairs pairs (the machine's speed drifts; each pair is read as a ratio).

Each bridge run gets a BRIDGE_HOME of its own (so its own journal), deleted after the run; the peak of
``bridge_journal_bytes`` in its /metrics is reported where the bridge has a journal.

Every bridge run ends with a reconciliation: trades stored = trades sent, no duplicate id. The table
is printed and written to bench/results/ with the machine's description. The NBBO-book scaling law
(contracts in the book against trades/s and memory) is measured in-process by bench_normalize.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import psutil
import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import OPTIONS_FLOW_COLUMNS, _options_flow_tuple
from bridge.adapters.simulator.polygon import (
    PolygonFrame,
    PolygonScenario,
    SentLog,
    prebuilt_frames,
    serve_polygon_simulator,
)
from bridge.adapters.simulator.proxy import TcpProxy
from bridge.domain.models import OptionsFlowRow, ReceivedFrame
from bridge.domain.normalizers.polygon import PolygonNormalizer

KEY = "bench-key"
QUOTE_SHARE = 0.6
"""Of the events the simulator sends, the share that are quotes (1.5 quotes per trade)."""
FULL_SPEED_GUESS = 40_000.0
"""Trades/s the full-speed frames' event times assume: a run a few times faster or slower than this
still stays well inside the bridge's one-hour plausibility window."""
BRIDGE_ENV: dict[str, str] = {}
"""``--bridge-env K=V,...``: settings given to every bridge run (an A/B of a setting)."""
PROFILE: dict[str, Path] = {}
"""``--profile DIR``: py-spy samples the bridge during the full-speed run (collapsed stacks, GIL holder only)."""
BRIDGE_PYTHONPATH: dict[str, str] = {}
"""``--bridge-src``: run another checkout's bridge (an A/B comparison in one run) against this harness."""
AB_ENV: dict[str, str] = {}
"""``--ab-env K=V,...``: settings given to the ``--ab-src`` bridge's runs instead of ``--bridge-env``."""
SMALL_CEILING_ROWS = 200_000
PARTS = ("ceiling", "naive", "full", "rates", "outage", "batches", "fsync", "ab")


@attrs.frozen
class BridgeRun:
    trades: int
    seconds: float
    peak_rss_mb: float
    bridge_cpu_s: float
    bridge_system_s: float
    """Of ``bridge_cpu_s``, the kernel's share (the journal's writes and fsyncs, sockets)."""
    postgres_cpu_s: float
    sender_cpu_s: float
    """This process: the simulator sending frames, and polling the table."""
    stored: int
    distinct: int
    latency: tuple[float, float, float] | None
    """(p50, p99, max) received → committed in seconds, when commit timestamps are on."""
    catch_up_s: float | None = None
    dead_letters: int = 0
    journal_peak_mb: float | None = None
    """The largest ``bridge_journal_bytes`` seen in /metrics (None: the bridge has no journal)."""
    timeline: tuple[tuple[float, float, float | None, int], ...] = ()
    """Every 0.5 s: (seconds since the first frame, RSS MB, journal MB, rows committed)."""

    @property
    def per_second(self) -> float:
        return self.trades / self.seconds

    @property
    def reconciled(self) -> bool:
        return self.stored == self.distinct == self.trades

    def describe(self) -> str:
        check = (
            "ok"
            if self.reconciled
            else (
                f"MISMATCH (sent {self.trades:,}, stored {self.stored:,}, distinct {self.distinct:,},"
                f" {self.dead_letters:,} dead letters)"
            )
        )
        per_100k = 1e5 / self.trades
        journal = "" if self.journal_peak_mb is None else f", journal ≤ {self.journal_peak_mb:.0f} MB"
        return (
            f"peak RSS {self.peak_rss_mb:.0f} MB{journal};"
            f" CPU s per 100k trades: bridge {self.bridge_cpu_s * per_100k:.2f}"
            f" (system {self.bridge_system_s * per_100k:.2f}),"
            f" PostgreSQL {self.postgres_cpu_s * per_100k:.2f}, sender {self.sender_cpu_s * per_100k:.2f};"
            f" reconciliation {check}"
        )


def rows_of(frames: Sequence[PolygonFrame]) -> list[OptionsFlowRow]:
    """The rows the bridge stores for ``frames``: the same normalizer over the same frames."""
    normalizer = PolygonNormalizer()
    received = datetime.now(UTC)
    return [row for frame in frames for row in normalizer(ReceivedFrame("polygon", received, frame.text)).rows
            if isinstance(row, OptionsFlowRow)]  # fmt: skip


def execute(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def empty_table(url: str, also: str = "") -> None:
    """Every measurement starts from an empty table and a fresh checkpoint, so that no run pays for
    the previous one's WAL being flushed."""
    execute(url, f"truncate options_flow{also}")
    execute(url, "checkpoint")


def copy_ceiling(url: str, rows: list[OptionsFlowRow]) -> float:
    empty_table(url)
    columns = ", ".join(OPTIONS_FLOW_COLUMNS)
    tuples = [_options_flow_tuple(row) for row in rows]
    started = time.perf_counter()
    with (
        psycopg.connect(url) as connection,
        connection.cursor() as cursor,
        cursor.copy(f"copy options_flow ({columns}) from stdin") as copy,
    ):
        for values in tuples:
            copy.write_row(values)
    return len(rows) / (time.perf_counter() - started)


def naive_inserts(url: str, rows: list[OptionsFlowRow]) -> float:
    empty_table(url)
    columns = ", ".join(OPTIONS_FLOW_COLUMNS)
    marks = ", ".join(["%s"] * len(OPTIONS_FLOW_COLUMNS))
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        for row in rows:
            connection.execute(f"insert into options_flow ({columns}) values ({marks})", _options_flow_tuple(row))
    return len(rows) / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process on the machine (the benchmark's server is the busy one)."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in {"postgres", "postmaster"} and process.info["cpu_times"] is not None:
            total += process.info["cpu_times"].user + process.info["cpu_times"].system
    return total


def scrape(port: str) -> tuple[int, float | None]:
    """From the bridge's /metrics: ``options_flow`` rows committed (0 until it answers) and the journal's
    bytes on disk (None when the bridge has no journal)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0, None
    rows, journal = 0, None
    for line in text.splitlines():
        if line.startswith('bridge_rows_committed_total{table="options_flow"}'):
            rows = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("bridge_journal_bytes "):
            journal = float(line.rsplit(" ", 1)[1])
    return rows, journal


def stored(url: str) -> tuple[int, int]:
    ((count, distinct),) = execute(url, "select count(*), count(distinct id) from options_flow")
    return int(count), int(distinct)


def latency(url: str) -> tuple[float, float, float] | None:
    """Per row: when its transaction committed minus when the bridge received its frame."""
    if execute(url, "show track_commit_timestamp") != [("on",)]:
        return None
    ((p50, p99, worst),) = execute(
        url,
        "select percentile_cont(0.5) within group (order by lag), percentile_cont(0.99) within group (order by lag),"
        " max(lag) from (select extract(epoch from pg_xact_commit_timestamp(xmin) - received_at) as lag"
        " from options_flow) as lags",
    )
    return float(p50), float(p99), float(worst)


def last_commit_epoch(url: str) -> float | None:
    if execute(url, "show track_commit_timestamp") != [("on",)]:
        return None
    ((moment,),) = execute(url, "select extract(epoch from max(pg_xact_commit_timestamp(xmin))) from options_flow")
    return float(moment)


def proxied(url: str) -> tuple[TcpProxy, Callable[[int], str]]:
    """A proxy in front of the database that can cut it off, and the URL through it for its port."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    proxy = (TcpProxy.to_unix_socket(f"{host}/.s.PGSQL.{params.get('port', 5432)}") if host.startswith("/")
             else TcpProxy.to_tcp(host, int(params.get("port", 5432))))  # fmt: skip
    return proxy, lambda port: make_conninfo(**{**params, "host": "127.0.0.1", "port": str(port)})


async def bridge_run(
    url: str,
    home: Path,
    frames: Sequence[PolygonFrame],
    *,
    rate: float | None = None,
    outage_s: float | None = None,
    env_extra: dict[str, str] | None = None,
    src: str | None = None,
) -> BridgeRun:
    """Serve ``frames`` to a `bridge run` process until every trade is committed (or progress stops for 30 s).

    ``src``: run the bridge from that ``src/`` directory (another checkout) instead of ``--bridge-src``
    or this one; such a run gets ``--ab-env`` instead of ``--bridge-env``.
    """
    empty_table(url, ", bridge_dead_letters")
    run_home = Path(tempfile.mkdtemp(prefix="run-", dir=home))  # its own journal, so no run replays another's
    trades = sum(frame.trades for frame in frames)
    sent = SentLog()
    proxy, proxied_url = proxied(url)
    async with trio.open_nursery() as nursery:
        database_url = url
        if outage_s is not None:
            database_url = proxied_url(await nursery.start(proxy.serve))
        sim = await nursery.start(functools.partial(
            serve_polygon_simulator, api_key=KEY, events_per_second=None if rate is None else rate / (1 - QUOTE_SHARE),
            frames=frames, log=sent))  # fmt: skip
        code = {"PYTHONPATH": src} if src is not None else BRIDGE_PYTHONPATH
        settings = AB_ENV if src is not None else BRIDGE_ENV
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}, **code,
               "DATABASE_URL": database_url,
               "BRIDGE_POLYGON_API_KEY": KEY, "BRIDGE_POLYGON_URL": sim, "BRIDGE_HOME": str(run_home),
               "BRIDGE_HTTP_PORT": str(free_port()), "BRIDGE_HTTP_HOST": "127.0.0.1",
               "BRIDGE_LOG_LEVEL": "warning", **settings, **(env_extra or {})}  # fmt: skip
        log = (home / "bridge.log").open("ab")
        process = await trio.lowlevel.open_process([sys.executable, "-m", "bridge", "run"], env=env, stdout=log,
                                                   stderr=log)  # fmt: skip
        watched = psutil.Process(process.pid)
        profiler = None
        if "dir" in PROFILE and rate is None and outage_s is None:
            # --gil: only the thread holding the GIL, which is what bounds a CPU-bound Python process
            out = PROFILE["dir"] / f"bridge-{time.strftime('%Y%m%d-%H%M%S')}.txt"
            profiler = await trio.lowlevel.open_process(
                ["py-spy", "record", "--pid", str(process.pid), "--gil", "--rate", "200", "--format", "raw",
                 "--output", str(out)], stdout=log, stderr=log)  # fmt: skip
        while sent.frames_sent == 0:  # the simulator's counter has no event
            if process.poll() is not None:  # it failed at start: say why rather than wait forever
                tail = "\n".join((home / "bridge.log").read_text(errors="replace").splitlines()[-3:])
                raise SystemExit(f"`bridge run` exited ({process.returncode}) before its first frame:\n{tail}")
            await trio.sleep(0.005)
        started, started_wall = time.monotonic(), time.time()
        cpu_before = watched.cpu_times()
        postgres_before = postgres_cpu_s()
        sender_before = time.process_time()
        catch_up_s = None
        restored: float | None = None

        async def cut_off(outage: float) -> None:
            nonlocal restored
            await trio.sleep(2)
            proxy.break_connections()
            await trio.sleep(outage)
            proxy.restore()
            restored = time.monotonic()

        if outage_s is not None:
            nursery.start_soon(cut_off, outage_s)
        # Polled from the bridge's own metrics, in a thread: a count(*) on the table would load the
        # database, and a blocking call here would stall the simulator's sends. A run that stops
        # making progress for 30 s ends here too; the reconciliation then says what is missing.
        progress, progressed_at = -1, time.monotonic()
        journal_peak: float | None = None
        timeline = []
        while progress < trades and (time.monotonic() - progressed_at < 30 or (outage_s and restored is None)):
            now_committed, journal = await trio.to_thread.run_sync(scrape, env["BRIDGE_HTTP_PORT"])
            if journal is not None:
                journal_peak = max(journal, journal_peak or 0.0)
            with contextlib.suppress(psutil.Error):
                timeline.append((time.monotonic() - started, watched.memory_info().rss / 2**20,
                                 None if journal is None else journal / 2**20, now_committed))  # fmt: skip
            if now_committed != progress or (outage_s is not None and restored is None):
                progress, progressed_at = now_committed, time.monotonic()
            await trio.sleep(0.5)  # scraping /metrics costs the bridge CPU: not more often
        finished = time.monotonic()
        if restored is not None:
            catch_up_s = finished - restored
        cpu_after = watched.cpu_times()
        postgres_after = postgres_cpu_s()
        sender_cpu = time.process_time() - sender_before
        peak = _peak_rss_mb(process.pid)
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if profiler is not None:
            with trio.move_on_after(30):
                await profiler.wait()  # py-spy writes its file when the bridge exits
        nursery.cancel_scope.cancel()
    shutil.rmtree(run_home, ignore_errors=True)
    last = last_commit_epoch(url)
    seconds = (last - started_wall) if last is not None and rate is None else finished - started
    count, distinct = stored(url)
    ((dead,),) = execute(url, "select count(*) from bridge_dead_letters")
    return BridgeRun(
        trades=sent.messages_by_table["options_flow"],
        seconds=seconds,
        peak_rss_mb=peak,
        bridge_cpu_s=(cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
        bridge_system_s=cpu_after.system - cpu_before.system,
        postgres_cpu_s=postgres_after - postgres_before,
        sender_cpu_s=sender_cpu,
        stored=count,
        distinct=distinct,
        latency=latency(url),
        catch_up_s=catch_up_s,
        dead_letters=int(dead),
        journal_peak_mb=None if journal_peak is None else journal_peak / 2**20,
        timeline=tuple(timeline),
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def frames_for(trades: int, contracts: int, trades_per_second: float) -> list[PolygonFrame]:
    """Frames whose event times advance at ``trades_per_second`` (so they stay near the wall clock)."""
    events_per_second = trades_per_second / (1 - QUOTE_SHARE)
    scenario = PolygonScenario(seed=11, contracts=contracts, quote_share=QUOTE_SHARE, start=datetime.now(UTC),
                               ms_per_event=1000 / events_per_second)  # fmt: skip
    return prebuilt_frames(scenario, trades, batch_size=200)


def figure(label: str, trades_per_second: float) -> str:
    return f"{label + ':':<46}{trades_per_second:>10,.0f} trades/s"


def fmt_latency(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return "latency n/a (track_commit_timestamp is off)"
    p50, p99, worst = (1000 * part for part in value)
    return f"received→committed p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms"


def run(url: str, home: Path, args: argparse.Namespace) -> str:
    migrate(url)
    skip = set(filter(None, args.skip.split(",")))
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')} · {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"{execute(url, 'show server_version')[0][0].split()[0]} on the same machine; {platform.platform()}",
        f"workload: Polygon frames of 200 events, {QUOTE_SHARE:.0%} quotes, {args.contracts:,} contracts",
    ]

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for line in lines:
        print(line, flush=True)
    ceiling = small_ceiling = naive = None
    full_speed_frames = frames_for(args.trades, args.contracts, FULL_SPEED_GUESS)
    if "ceiling" not in skip or "naive" not in skip:
        rows = rows_of(full_speed_frames)
        if "ceiling" not in skip:
            ceiling = copy_ceiling(url, rows)
            emit(figure(f"COPY ceiling, the same {len(rows):,} rows", ceiling))
            if len(rows) > SMALL_CEILING_ROWS:
                # a table this small stays in shared_buffers: the database's best case, shown for scale
                small_ceiling = copy_ceiling(url, rows[:SMALL_CEILING_ROWS])
                emit(figure(f"COPY ceiling, the first {SMALL_CEILING_ROWS:,} only", small_ceiling))
        if "naive" not in skip:
            naive = naive_inserts(url, rows[:5000])
            emit(figure("naive (one INSERT per trade, 5,000 trades)", naive))
        del rows
    if "full" not in skip:
        full = trio.run(functools.partial(bridge_run, url, home, full_speed_frames))
        ratios = ", ".join(
            part for part in (
                f"{full.per_second / ceiling:.2f} x ceiling" if ceiling else "",
                f"{full.per_second / small_ceiling:.2f} x the {SMALL_CEILING_ROWS:,}-row one" if small_ceiling else "",
                f"{full.per_second / naive:.1f} x naive" if naive else "",
            ) if part
        )  # fmt: skip
        emit(f"{figure('bridge end to end, full speed', full.per_second)} ({ratios})")
        emit(f"    {full.trades:,} trades in {full.seconds:.1f} s; {full.describe()}")
    if "rates" not in skip:
        for rate in (float(value) for value in args.rates.split(",") if value):
            result = trio.run(
                functools.partial(
                    bridge_run, url, home, frames_for(int(rate * args.rate_seconds), args.contracts, rate), rate=rate
                )
            )
            emit(f"at {rate:>6,.0f} trades/s: {fmt_latency(result.latency)}; {result.describe()}")
    if "outage" not in skip:
        rate = 5000.0
        total = int(rate * (args.outage_seconds + 12))
        result = trio.run(
            functools.partial(
                bridge_run, url, home, frames_for(total, args.contracts, rate), rate=rate, outage_s=args.outage_seconds
            )
        )
        emit(f"at  5,000 trades/s with the database away {args.outage_seconds:.0f} s: caught up "
             f"{result.catch_up_s:.1f} s after it came back; {result.describe()}")  # fmt: skip
        if args.timeline:
            emit("    s      RSS MB  journal MB  committed")
            for moment, rss, journal, done in result.timeline[::4]:
                shown = "-" if journal is None else f"{journal:.0f}"
                emit(f"    {moment:5.1f}  {rss:6.0f}  {shown:>10}  {done:>9,}")
    if "batches" not in skip:
        trades = min(args.trades, 300_000)
        frames = frames_for(trades, args.contracts, FULL_SPEED_GUESS)
        for size in (int(value) for value in args.batch_sizes.split(",") if value):
            result = trio.run(
                functools.partial(bridge_run, url, home, frames, env_extra={"BRIDGE_BATCH_MAX_ROWS": str(size)})
            )
            emit(
                f"BRIDGE_BATCH_MAX_ROWS={size:<6} full speed: {result.per_second:>8,.0f} trades/s; {result.describe()}"
            )
    if "fsync" not in skip:
        frames = frames_for(min(args.trades, 300_000), args.contracts, FULL_SPEED_GUESS)
        paced = frames_for(int(5000 * args.rate_seconds), args.contracts, 5000)
        for interval in (value for value in args.fsync_ms.split(",") if value):
            setting = {"BRIDGE_JOURNAL_FSYNC_MS": interval}
            fast = trio.run(functools.partial(bridge_run, url, home, frames, env_extra=setting))
            slow = trio.run(functools.partial(bridge_run, url, home, paced, rate=5000.0, env_extra=setting))
            emit(f"BRIDGE_JOURNAL_FSYNC_MS={interval:<4} full speed: {fast.per_second:>8,.0f} trades/s; "
                 f"{fast.describe()}")  # fmt: skip
            emit(f"    at  5,000 trades/s: {fmt_latency(slow.latency)}; {slow.describe()}")
    if "ab" not in skip and args.ab_src:
        frames = frames_for(min(args.trades, 300_000), args.contracts, FULL_SPEED_GUESS)
        others = [str(Path(src).resolve()) for src in args.ab_src.split(",") if src]
        ratios: dict[str, list[float]] = {other: [] for other in others}
        for round_ in range(args.ab_pairs):
            # rotate which goes first, so that a drift in the machine's speed favours none
            order: list[str | None] = [None, *others]
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            results = {src: trio.run(functools.partial(bridge_run, url, home, frames, src=src)) for src in order}
            this = results[None]
            emit(f"A/B round {round_ + 1}: this  {this.per_second:>8,.0f} trades/s ({this.describe()})")
            for other in others:
                that = results[other]
                ratios[other].append(this.per_second / that.per_second)
                emit(f"    {other}: {that.per_second:>8,.0f} trades/s ({that.describe()});"
                     f" this / it {ratios[other][-1]:.3f}")  # fmt: skip
        for other, values in ratios.items():
            values.sort()
            emit(f"A/B this / {other}, full speed: median {values[len(values) // 2]:.3f}, "
                 f"range {values[0]:.3f}-{values[-1]:.3f} over {len(values)} rounds")  # fmt: skip
    return "\n".join(lines) + "\n"


@contextmanager
def database(args: argparse.Namespace, home: Path) -> Iterator[str]:
    if args.database_url:
        yield args.database_url
        return
    # Commit timestamps give exact per-row latency; the setting needs a server restart.
    with open_embedded_postgres(home / "db") as url:
        execute(url, "alter system set track_commit_timestamp = on")
    with open_embedded_postgres(home / "db") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=600_000, help="trades in the full-speed run")
    parser.add_argument("--rates", default="1000,5000,20000", help="fixed rates, trades/s")
    parser.add_argument("--rate-seconds", type=float, default=20, help="seconds at each fixed rate")
    parser.add_argument("--outage-seconds", type=float, default=60)
    parser.add_argument("--batch-sizes", default="1000,5000,20000")
    parser.add_argument("--fsync-ms", default="1,5,20,100", help="BRIDGE_JOURNAL_FSYNC_MS values to compare")
    parser.add_argument("--ab-src", help="the ab part: other src/ directories (comma-separated)")
    parser.add_argument("--ab-env", default="", help="K=V,... settings for the --ab-src bridge's runs")
    parser.add_argument("--ab-pairs", type=int, default=3, help="rounds in the ab part (each runs every bridge once)")
    parser.add_argument("--timeline", action="store_true", help="print the outage run's RSS and journal every 2 s")
    parser.add_argument("--contracts", type=int, default=200, help="distinct contracts in the stream")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--database-url")
    parser.add_argument("--bridge-env", default="", help="K=V,... settings for every bridge run")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the full-speed bridge to this directory")
    parser.add_argument("--bridge-src", help="run `bridge run` from this src/ directory (another checkout)")
    args = parser.parse_args()
    BRIDGE_ENV.update(pair.split("=", 1) for pair in args.bridge_env.split(",") if pair)
    AB_ENV.update(pair.split("=", 1) for pair in args.ab_env.split(",") if pair)
    if args.profile:
        PROFILE["dir"] = Path(args.profile).resolve()
        PROFILE["dir"].mkdir(parents=True, exist_ok=True)
    if args.bridge_src:
        BRIDGE_PYTHONPATH["PYTHONPATH"] = str(Path(args.bridge_src).resolve())
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as directory:
        home = Path(directory)
        with database(args, home) as url:
            report = run(url, home, args)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.txt").write_text(report)


if __name__ == "__main__":
    main()
