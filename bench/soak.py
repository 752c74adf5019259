"""Soak: minutes of streaming with faults injected at random, then a reconciliation of sent against stored.

    python bench/soak.py [--minutes 3] [--rate 2000] [--seed 1] [--database-url URL]

`bridge run` runs as a separate process against a local Developer Console simulator (which re-sends its
last messages to each new connection, as an upstream with a replay window does) and PostgreSQL (embedded
unless --database-url) behind a TCP proxy. Every 5-15 s one fault is injected: a database outage of 2-8 s,
SIGTERM and restart, SIGKILL and restart, or a stalled-then-dropped stream (the simulator closes the
connection every few hundred frames anyway). At the end the simulator stops, the bridge drains, and the
script checks rows stored = messages sent with no duplicate id. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.adapters.simulator.proxy import TcpProxy

TOKEN = "soak-token"


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stored(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as connection:
        row = connection.execute("select count(*), count(distinct id) from options_flow").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def soak(url: str, args: argparse.Namespace, home: Path) -> str:
    rng = random.Random(args.seed)
    sent = SentLog()
    faults: dict[str, int] = {"outage": 0, "sigterm": 0, "sigkill": 0}
    peak_mb = 0.0
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    proxy = (TcpProxy.to_unix_socket(f"{host}/.s.PGSQL.{params.get('port', 5432)}") if host.startswith("/")
             else TcpProxy.to_tcp(host, int(params.get("port", 5432))))  # fmt: skip
    total = int(args.rate * args.minutes * 60)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        proxied = make_conninfo(**{**params, "host": "127.0.0.1", "port": str(port)})
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=args.rate, batch_size=25,
            total_messages=total, resend_on_reconnect=5000, disconnect_every_frames=400, log=sent))  # fmt: skip
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}, "DATABASE_URL": proxied,
               "BRIDGE_CONSOLE_URL": sim, "BRIDGE_CONSOLE_TOKEN": TOKEN, "BRIDGE_HOME": str(home),
               "BRIDGE_HTTP_PORT": "0", "BRIDGE_LOG_FORMAT": "json", "BRIDGE_SHUTDOWN_GRACE_S": "5"}  # fmt: skip
        log = (home / "bridge.log").open("ab")

        async def start() -> trio.Process:
            return await trio.lowlevel.open_process([sys.executable, "-m", "bridge", "run"], env=env, stdout=log,
                                                    stderr=log)  # fmt: skip

        process = await start()
        started = time.monotonic()
        while sent.messages_sent < total:
            await trio.sleep(rng.uniform(5, 15))
            peak_mb = max(peak_mb, peak_rss_mb(process.pid))
            if sent.messages_sent >= total:
                break
            fault = rng.choice(["outage", "outage", "sigterm", "sigkill"])
            faults[fault] += 1
            if fault == "outage":
                proxy.break_connections()
                await trio.sleep(rng.uniform(2, 8))
                proxy.restore()
            else:
                process.send_signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
                code = await process.wait()
                if fault == "sigterm" and code != 0:
                    raise SystemExit(f"SIGTERM exit code {code}; see {home / 'bridge.log'}")
                process = await start()
        proxy.restore()
        expected = sent.messages_by_table["options_flow"]
        with trio.fail_after(300):
            while stored(url)[0] < expected:  # noqa: ASYNC110 - polling the database is the point
                await trio.sleep(0.5)
        elapsed = time.monotonic() - started
        peak_mb = max(peak_mb, peak_rss_mb(process.pid))
        process.send_signal(signal.SIGTERM)
        code = await process.wait()
        nursery.cancel_scope.cancel()
    rows, distinct = stored(url)
    ok = rows == distinct == expected and code == 0
    return (
        f"soak {args.minutes:g} min at {args.rate:g} msg/s (seed {args.seed}): {'OK' if ok else 'MISMATCH'}\n"
        f"  sent {sent.messages_sent:,} messages ({expected:,} trades) in {sent.frames_sent:,} frames over "
        f"{sent.connections} connections; {sent.extra['resent']:,} re-sent on reconnect\n"
        f"  stored {rows:,} trades, {distinct:,} distinct ids; duplicates {rows - distinct}\n"
        f"  faults: {faults['outage']} database outages, {faults['sigterm']} SIGTERM restarts, "
        f"{faults['sigkill']} SIGKILL restarts, plus a server disconnect every 400 frames\n"
        f"  wall time {elapsed:.0f} s; bridge peak RSS {peak_mb:.0f} MB (sampled); final exit code {code}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bridge-soak-") as directory:
        home = Path(directory)
        if args.database_url:
            migrate(args.database_url)
            report = trio.run(soak, args.database_url, args, home)
        else:
            with open_embedded_postgres(home / "db") as url:
                migrate(url)
                report = trio.run(soak, url, args, home)
    print(report, end="")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.txt").write_text(report)


if __name__ == "__main__":
    main()
