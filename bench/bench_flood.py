"""Flood: a server sending large invalid frames as fast as it can, against `bridge run`'s memory bounds.

    python bench/bench_flood.py [--seconds 30] [--frame-mib 1] [--mib-per-second 100] [--database-url URL]

A WebSocket server on loopback, speaking the Developer Console's handshake (bearer token), sends frames of
``--frame-mib`` MiB that are not JSON, as fast as the bridge reads them (at most ``--mib-per-second``), for
``--seconds``. `bridge run` (a separate process, the console feed, PostgreSQL embedded unless
--database-url) must dead-letter every one: the script then waits until it has, and checks each dead letter
against the frame it stands for: exactly one per frame sent, holding the frame's first 64 KiB (its
beginning, byte for byte), its full length in ``frame_length`` and its SHA-256 in ``frame_sha256``. Meanwhile
it samples the bridge's RSS (psutil, every 50 ms) and its journal's size (/metrics), and reports the peaks
with the kernel's own high-water mark (VmHWM). Results go to bench/results/flood-*.txt.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.simulator.server import serve_loopback, token_matches

TOKEN = "flood-token"
PREFIX_CHARS = 64 * 1024
"""What a dead letter keeps of a large frame."""


def frame_text(number: int, size: int) -> str:
    """Frame ``number``: ``size`` ASCII characters that are not JSON, distinct per frame (so are their ids)."""
    head = f"not json #{number:012d} "
    filler = "0123456789abcdef" * (size // 16 + 1)
    return head + filler[: size - len(head)]


def number_of(prefix: str) -> int:
    return int(prefix[len("not json #") :].split(" ", 1)[0])


class Flood:
    """The server: every connection gets frames until ``stop`` (then stays open, idle)."""

    def __init__(self, frame_bytes: int, bytes_per_second: float) -> None:
        self.frame_bytes = frame_bytes
        self.bytes_per_second = bytes_per_second
        self.sent = 0
        self.started: float | None = None
        self.stopped: float | None = None
        self.stop = trio.Event()

    async def handle(self, request: WebSocketRequest) -> None:
        if not token_matches(request, TOKEN):
            await request.reject(401)
            return
        ws = await request.accept()
        try:
            if self.started is None:
                self.started = time.monotonic()
            while not self.stop.is_set():
                # paced: frame n leaves no earlier than n frames' worth of bytes after the start
                await trio.sleep_until(self.started + self.sent * self.frame_bytes / self.bytes_per_second)
                await ws.send_message(frame_text(self.sent, self.frame_bytes))
                self.sent += 1
            self.stopped = time.monotonic()
            await trio.sleep_forever()
        except ConnectionClosed:
            return


def scrape_journal_bytes(port: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("bridge_journal_bytes "):
            return float(line.rsplit(" ", 1)[1])
    return None


def dead_letter_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("select count(*) from bridge_dead_letters where feed = 'console'").fetchone()
    assert row is not None
    return int(row[0])


def check_dead_letters(url: str, sent: int, frame_bytes: int) -> list[str]:
    """Every frame sent has exactly one dead letter, holding its prefix, its length and its digest."""
    problems: list[str] = []
    seen: dict[int, int] = {}
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "select frame, frame_length, frame_sha256, reason from bridge_dead_letters where feed = 'console'"
        ).fetchall()
    for frame, length, digest, reason in rows:
        number = number_of(frame)
        seen[number] = seen.get(number, 0) + 1
        text = frame_text(number, frame_bytes)
        if frame != text[:PREFIX_CHARS]:
            problems.append(f"frame {number}: stored text is not its first {PREFIX_CHARS:,} characters")
        if length != frame_bytes:
            problems.append(f"frame {number}: frame_length {length} != {frame_bytes}")
        if digest != hashlib.sha256(text.encode()).hexdigest():
            problems.append(f"frame {number}: frame_sha256 does not match")
        if not reason:
            problems.append(f"frame {number}: no reason")
    missing = [number for number in range(sent) if number not in seen]
    twice = [number for number, count in seen.items() if count > 1]
    if missing:
        problems.append(f"{len(missing):,} frames without a dead letter (first: {missing[:5]})")
    if twice:
        problems.append(f"{len(twice):,} frames dead-lettered more than once (first: {twice[:5]})")
    return problems[:20]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood(url: str, home: Path, args: argparse.Namespace) -> list[str]:
    frame_bytes = int(args.frame_mib * 2**20)
    server = Flood(frame_bytes, args.mib_per_second * 2**20)
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        ws_url = await nursery.start(functools.partial(serve_loopback, server.handle))
        http_port = str(free_port())
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
               "DATABASE_URL": url, "BRIDGE_HOME": str(home / "bridge"), "BRIDGE_FEEDS": "console",
               "BRIDGE_CONSOLE_URL": ws_url, "BRIDGE_CONSOLE_TOKEN": TOKEN, "BRIDGE_HTTP_PORT": http_port,
               "BRIDGE_HTTP_HOST": "127.0.0.1", "BRIDGE_LOG_LEVEL": "warning"}  # fmt: skip
        if args.bridge_src:
            env["PYTHONPATH"] = args.bridge_src
        log = (home / "bridge.log").open("ab")
        process = await trio.lowlevel.open_process([sys.executable, "-m", "bridge", "run"], env=env, stdout=log,
                                                   stderr=log)  # fmt: skip
        watched = psutil.Process(process.pid)
        peak_rss = 0.0
        peak_journal = 0.0
        rss_at_stop = 0.0

        async def sample_rss() -> None:
            nonlocal peak_rss
            while True:
                try:
                    peak_rss = max(peak_rss, watched.memory_info().rss / 2**20)
                except psutil.Error:
                    return
                await trio.sleep(0.05)

        async def sample_journal() -> None:
            nonlocal peak_journal
            while True:
                value = await trio.to_thread.run_sync(scrape_journal_bytes, http_port)
                if value is not None:
                    peak_journal = max(peak_journal, value / 2**20)
                await trio.sleep(0.5)

        nursery.start_soon(sample_rss)
        nursery.start_soon(sample_journal)
        while server.started is None:  # noqa: ASYNC110 - the server's first connection has no event
            await trio.sleep(0.01)
        cpu_before = watched.cpu_times()
        await trio.sleep(args.seconds)
        server.stop.set()
        while server.stopped is None:  # noqa: ASYNC110
            await trio.sleep(0.01)
        sent = server.sent
        assert server.started is not None
        send_s = server.stopped - server.started
        rss_at_stop = peak_rss
        waited = time.monotonic()
        done = 0
        while time.monotonic() - waited < args.drain_timeout:
            done = await trio.to_thread.run_sync(dead_letter_count, url)
            if done >= sent:
                break
            await trio.sleep(1)
        drain_s = time.monotonic() - waited
        cpu_after = watched.cpu_times()
        hwm = vm_hwm_mb(process.pid)
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        nursery.cancel_scope.cancel()
    problems = check_dead_letters(url, sent, frame_bytes)
    mib = sent * frame_bytes / 2**20
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    lines.append(f"sent {sent:,} frames of {frame_bytes:,} bytes (not JSON) in {send_s:.1f} s: {mib:,.0f} MiB, "
                 f"{mib / send_s:.1f} MiB/s ({sent / send_s:.1f} frames/s)")  # fmt: skip
    lines.append(f"dead-lettered {done:,} of {sent:,} within {drain_s:.1f} s after the flood stopped; "
                 f"bridge CPU {cpu:.1f} s ({cpu / (send_s + drain_s):.2f} of a core)")  # fmt: skip
    lines.append(f"bridge peak RSS: {hwm:.0f} MB (VmHWM), {peak_rss:.0f} MB sampled every 50 ms "
                 f"({rss_at_stop:.0f} MB by the end of the flood); journal on disk at most "
                 f"{peak_journal:.0f} MB")  # fmt: skip
    lines.append("dead letters: " + ("each holds its frame's first 64 KiB, frame_length and frame_sha256: ok"
                                     if not problems else "PROBLEMS:\n    " + "\n    ".join(problems)))  # fmt: skip
    return lines


@contextmanager
def database(args: argparse.Namespace, home: Path) -> Iterator[str]:
    if args.database_url:
        yield args.database_url
        return
    with open_embedded_postgres(home / "db") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--frame-mib", type=float, default=1.0)
    parser.add_argument("--mib-per-second", type=float, default=100.0, help="the sender's ceiling")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the dead letters")
    parser.add_argument("--database-url")
    parser.add_argument("--bridge-src", help="run `bridge run` from this src/ directory (another checkout)")
    args = parser.parse_args()
    if args.bridge_src:
        args.bridge_src = str(Path(args.bridge_src).resolve())
    with tempfile.TemporaryDirectory(prefix="bridge-flood-") as directory:
        home = Path(directory)
        with database(args, home) as url:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("truncate bridge_dead_letters")
            header = (f"{time.strftime('%Y-%m-%d %H:%M')} · {platform.machine()}, {os.cpu_count()} cores, "
                      f"Python {platform.python_version()}; flood of {args.frame_mib:g} MiB invalid frames for "
                      f"{args.seconds:g} s, at most {args.mib_per_second:g} MiB/s")  # fmt: skip
            print(header, flush=True)
            lines = [header, *trio.run(flood, url, home, args)]
    for line in lines[1:]:
        print(line, flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"flood-{time.strftime('%Y%m%d-%H%M%S')}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
