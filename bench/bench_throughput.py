"""Throughput and latency of `bridge run` against the Polygon firehose, beside the machine's own limits.

    python bench/bench_throughput.py [--trades 300000] [--rates 1000,5000,20000] [--rate-seconds 20]
                                     [--database-url URL]

In one run, on this machine, with PostgreSQL on the same machine (embedded unless --database-url):
  1. ceiling:  a plain COPY of the same rows from this Python process into options_flow;
  2. naive:    one INSERT per trade (what users write first), on a sample;
  3. bridge:   `bridge run` as a separate process fed by the local Polygon simulator at full speed:
               sustained trades/s from first sent to last committed, and peak RSS;
  4. latency:  the same at fixed rates: received → committed p50/p99 (from the bridge's own histogram,
               bucket upper bounds) and peak RSS.
Every bridge run ends with a reconciliation: trades stored = trades sent, no duplicate id. The table is
printed and written to bench/results/ with the machine's description.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from itertools import islice
from pathlib import Path

import psycopg
import trio

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import OPTIONS_FLOW_COLUMNS, _options_flow_tuple
from bridge.adapters.simulator.polygon import PolygonScenario, SentLog, serve_polygon_simulator
from bridge.domain.models import OptionsFlowRow, ReceivedFrame
from bridge.domain.normalizers.polygon import PolygonNormalizer

KEY = "bench-key"


def sample_rows(count: int) -> list[OptionsFlowRow]:
    """Real normalized trades (quotes interleaved as the simulator sends them)."""
    import orjson

    normalizer = PolygonNormalizer()
    events = PolygonScenario(seed=7, contracts=2000).events()
    rows: list[OptionsFlowRow] = []
    while len(rows) < count:
        frame = ReceivedFrame("polygon", _now(), orjson.dumps(list(islice(events, 100))).decode())
        rows += [row for row in normalizer(frame).rows if isinstance(row, OptionsFlowRow)]
    return rows[:count]


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("truncate options_flow")


def copy_ceiling(url: str, rows: list[OptionsFlowRow]) -> float:
    truncate(url)
    columns = ", ".join(OPTIONS_FLOW_COLUMNS)
    started = time.perf_counter()
    with (
        psycopg.connect(url) as connection,
        connection.cursor() as cursor,
        cursor.copy(f"copy options_flow ({columns}) from stdin") as copy,
    ):
        for row in rows:
            copy.write_row(_options_flow_tuple(row))
    return len(rows) / (time.perf_counter() - started)


def naive_inserts(url: str, rows: list[OptionsFlowRow]) -> float:
    truncate(url)
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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stored(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as connection:
        row = connection.execute("select count(*), count(distinct id) from options_flow").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def latency_quantiles(metrics: str) -> tuple[float, float]:
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("bridge_commit_latency_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0

    def quantile(q: float) -> float:
        return next((bound for bound, count in buckets if count >= q * total), float("nan"))

    return quantile(0.5), quantile(0.99)


async def bridge_run(url: str, home: Path, trades: int, rate: float | None) -> dict[str, float]:
    truncate(url)
    sent = SentLog()
    port = free_port()
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve_polygon_simulator, api_key=KEY, events_per_second=None if rate is None else rate / 0.4,
            batch_size=200, total_trades=trades, contracts=200, log=sent))  # fmt: skip
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}, "DATABASE_URL": url,
               "BRIDGE_POLYGON_API_KEY": KEY, "BRIDGE_POLYGON_URL": sim, "BRIDGE_HOME": str(home),
               "BRIDGE_HTTP_PORT": str(port), "BRIDGE_HTTP_HOST": "127.0.0.1",
               "BRIDGE_LOG_LEVEL": "warning"}  # fmt: skip
        log = (home / "bridge.log").open("ab")
        process = await trio.lowlevel.open_process([sys.executable, "-m", "bridge", "run"], env=env, stdout=log,
                                                   stderr=log)  # fmt: skip
        while sent.messages_sent == 0:  # noqa: ASYNC110 - the simulator's counter has no event
            await trio.sleep(0.01)
        started = time.monotonic()
        peak = 0.0
        with trio.fail_after(120):
            while stored(url)[0] < trades:
                peak = max(peak, peak_rss_mb(process.pid))
                await trio.sleep(0.2)
        elapsed = time.monotonic() - started
        metrics = await trio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        peak = max(peak, peak_rss_mb(process.pid))
        process.send_signal(signal.SIGTERM)
        await process.wait()
        nursery.cancel_scope.cancel()
    rows, distinct = stored(url)
    p50, p99 = latency_quantiles(metrics)
    return {"trades_s": trades / elapsed, "rss_mb": peak, "p50": p50, "p99": p99,
            "ok": float(rows == distinct == sent.messages_by_table["options_flow"] == trades)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=300_000)
    parser.add_argument("--rates", default="1000,5000,20000")
    parser.add_argument("--rate-seconds", type=float, default=20)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as directory:
        home = Path(directory)
        if args.database_url:
            report = run(args.database_url, home, args)
        else:
            with open_embedded_postgres(home / "db") as url:
                report = run(url, home, args)
    print(report, end="")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.txt").write_text(report)


def run(url: str, home: Path, args: argparse.Namespace) -> str:
    migrate(url)
    rows = sample_rows(min(args.trades, 200_000))
    ceiling = copy_ceiling(url, rows)
    naive = naive_inserts(url, rows[:5000])
    full = trio.run(bridge_run, url, home, args.trades, None)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}; PostgreSQL on the same machine",
        f"COPY ceiling (plain COPY from Python):     {ceiling:>10,.0f} trades/s",
        f"naive (one INSERT per trade, 5,000):       {naive:>10,.0f} trades/s",
        f"bridge end to end, full speed:             {full['trades_s']:>10,.0f} trades/s "
        f"({full['trades_s'] / ceiling:.2f} x ceiling, {full['trades_s'] / naive:.1f} x naive), "
        f"peak RSS {full['rss_mb']:.0f} MB, reconciliation {'ok' if full['ok'] else 'MISMATCH'}",
    ]
    for rate in (float(value) for value in args.rates.split(",")):
        result = trio.run(bridge_run, url, home, int(rate * args.rate_seconds), rate)
        lines.append(
            f"at {rate:>6,.0f} trades/s: received→committed p50 ≤ {result['p50'] * 1000:.0f} ms, "
            f"p99 ≤ {result['p99'] * 1000:.0f} ms (bucket bounds), peak RSS {result['rss_mb']:.0f} MB, "
            f"reconciliation {'ok' if result['ok'] else 'MISMATCH'}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
