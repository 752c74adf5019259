"""Two and three ``bridge run`` processes sharing feeds through leases, against a server that allows one
connection per key: SIGKILL, SIGSTOP/SIGCONT and SIGTERM of the holder.

The server (``KeyedStream``) speaks the Developer Console protocol (key: the bearer token) and Benzinga's
(key: the ``token`` query parameter), numbers every message it sends, and records any moment at which a key
has two connections. Like a vendor, it drops a client that does not answer a ping within
``PONG_TIMEOUT_S`` (a frozen process cannot). Each process journals into its own ``BRIDGE_HOME`` and keeps
its segments (``BRIDGE_JOURNAL_RETAIN_S``), so the test reads, per process, which message it read and when
(the journal's receive time, on the host's one clock): what each holder read, whether two ever read at
once, and that the database holds exactly what was journaled, once.
"""

from __future__ import annotations

import functools
import itertools
import signal
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import psycopg
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from bridge.adapters.simulator.console import ConsoleScenario
from bridge.adapters.simulator.server import bearer_token, serve_loopback
from tests.integration.test_cli import BRIDGE, clean_env, free_port, http_get

pytestmark = pytest.mark.slow

TTL_S: Final = 2.0
SEND_EVERY_S: Final = 0.01
PING_EVERY_S: Final = 0.1
PONG_TIMEOUT_S: Final = 0.5
CONSOLE_TOKEN: Final = "console-lease-t0ken"
BENZINGA_TOKEN: Final = "benzinga-lease-t0ken"


def console_messages() -> Iterator[str]:
    """Trades only, each with its own ``sequence`` (so each is one row), event times near now."""
    scenario = ConsoleScenario.for_rate(7, datetime.now(UTC), 1 / SEND_EVERY_S)
    numbers = itertools.count(1)
    for message in scenario.messages():
        if message["type"] == "options_flow":
            n = next(numbers)
            message["data"]["sequence"] = n
            yield orjson.dumps(message).decode()


def benzinga_messages() -> Iterator[str]:
    """New articles in the newer message shape, one row each."""
    for n in itertools.count(1):
        now = datetime.now(UTC)
        content = {"id": 50_000_000 + n, "author": "Benzinga Insights", "created": format_datetime(now),
                   "updated": format_datetime(now), "title": f"Lease test headline {n}", "body": f"<p>{n}</p>",
                   "url": f"https://www.benzinga.com/x/{n}", "channels": [], "stocks": [{"name": "AAPL"}]}  # fmt: skip
        yield orjson.dumps({"id": f"{n:032x}", "api_version": "websocket/v1", "kind": "news",
                            "data": {"action": "created", "id": 50_000_000 + n,
                                     "timestamp": now.isoformat().replace("+00:00", "Z"),
                                     "content": content}}).decode()  # fmt: skip


@attrs.define
class KeyedStream:
    """One message sequence per key, served to whichever single connection the key has."""

    sources: dict[str, Iterator[str]]
    open: defaultdict[str, int] = attrs.Factory(lambda: defaultdict(int))
    doubles: list[tuple[str, float]] = attrs.Factory(list)
    """(key, when) each time a key had two live connections: the test fails on any."""
    connections: defaultdict[str, int] = attrs.Factory(lambda: defaultdict(int))
    dropped_unresponsive: int = 0
    sent: defaultdict[str, int] = attrs.Factory(lambda: defaultdict(int))

    async def handler(self, request: WebSocketRequest) -> None:
        key = bearer_token(request)
        if key not in self.sources:
            await request.reject(401)
            return
        ws = await request.accept()
        self.open[key] += 1
        self.connections[key] += 1
        if self.open[key] > 1:
            self.doubles.append((key, trio.current_time()))
        try:
            async with trio.open_nursery() as nursery:

                async def until_closed(task: Callable[[], Awaitable[None]]) -> None:
                    with suppress(ConnectionClosed):
                        await task()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_closed, functools.partial(self._send, ws, key))
                nursery.start_soon(until_closed, functools.partial(self._watch, ws))
                nursery.start_soon(until_closed, functools.partial(self._drain, ws))
        finally:
            self.open[key] -= 1  # from here the server sends nothing more on it: it is not a connection any more

    async def _send(self, ws: WebSocketConnection, key: str) -> None:
        source = self.sources[key]
        while True:
            await ws.send_message(next(source))
            self.sent[key] += 1
            await trio.sleep(SEND_EVERY_S)

    async def _watch(self, ws: WebSocketConnection) -> None:
        """Drop a client that does not answer a ping in time, as vendors do (a frozen process cannot)."""
        while True:
            await trio.sleep(PING_EVERY_S)
            with trio.move_on_after(PONG_TIMEOUT_S) as waited:
                await ws.ping()
            if waited.cancelled_caught:
                self.dropped_unresponsive += 1
                return

    @staticmethod
    async def _drain(ws: WebSocketConnection) -> None:
        """Read what the client sends (Benzinga's replay request), so pongs are seen."""
        while True:
            await ws.get_message()


@attrs.define
class Bridge:
    name: str
    home: Path
    port: int
    process: trio.Process
    stopped_at: float | None = None
    """Wall time (epoch s) of the signal that ended its reading."""


@attrs.define
class Harness:
    database_url: str
    tmp: Path
    urls: dict[str, str]
    feeds: tuple[str, ...]
    nursery: trio.Nursery
    bridges: dict[str, Bridge] = attrs.Factory(dict)

    async def start(self, name: str) -> Bridge:
        home = self.tmp / name
        port = free_port()
        variables = {"DATABASE_URL": self.database_url, "BRIDGE_HOME": str(home), "BRIDGE_INSTANCE_ID": name,
                     "BRIDGE_LEASES": "on", "BRIDGE_LEASE_TTL_S": str(TTL_S), "BRIDGE_FEEDS": ",".join(self.feeds),
                     "BRIDGE_JOURNAL_RETAIN_S": "3600", "BRIDGE_LOG_FORMAT": "json", "BRIDGE_HTTP_PORT": str(port),
                     "BRIDGE_HTTP_HOST": "127.0.0.1", "BRIDGE_SHUTDOWN_GRACE_S": "10"}  # fmt: skip
        if "console" in self.feeds:
            variables |= {"BRIDGE_CONSOLE_URL": self.urls["console"], "BRIDGE_CONSOLE_TOKEN": CONSOLE_TOKEN}
        if "benzinga" in self.feeds:
            variables |= {"BRIDGE_BENZINGA_URL": self.urls["benzinga"], "BRIDGE_BENZINGA_API_KEY": BENZINGA_TOKEN}
        home.mkdir()
        log = (self.tmp / f"{name}.log").open("wb")
        process = await trio.lowlevel.open_process([*BRIDGE, "run"], env=clean_env(**variables), stdout=log,
                                                   stderr=subprocess.STDOUT)  # fmt: skip
        bridge = self.bridges[name] = Bridge(name, home, port, process)
        return bridge

    def signal(self, name: str, signum: int) -> float:
        at = datetime.now(UTC).timestamp()
        self.bridges[name].process.send_signal(signum)
        return at

    def holders(self) -> dict[str, str]:
        with psycopg.connect(self.database_url) as connection:
            rows = connection.execute(
                "select substr(name, 6), holder from bridge_leases where name like 'feed:%' and expires_at > now()"
            ).fetchall()
        return dict(rows)

    async def wait_held(self, feed: str, *, not_by: str | None = None) -> str:
        """The feed's live holder (other than ``not_by``) once it has journaled a frame."""
        with trio.fail_after(30):
            while True:
                holder = self.holders().get(feed)
                if holder is not None and holder != not_by and self.reads(holder, feed):
                    return holder
                await trio.sleep(0.05)

    def reads(self, name: str, feed: str) -> list[tuple[float, str]]:
        """(receive time, frame text) of every frame ``name`` journaled for ``feed``, in order."""
        records: list[tuple[float, str]] = []
        for segment in sorted((self.bridges[name].home / "journal" / feed).glob("*.wal")):
            for line in segment.read_bytes().splitlines():
                try:
                    record = orjson.loads(line.split(b" ", 1)[1])
                except (IndexError, orjson.JSONDecodeError):
                    continue  # the tail being written
                records.append((datetime.fromisoformat(record["at"]).timestamp(), record["frame"]))
        return records

    async def stop_all(self) -> None:
        for bridge in self.bridges.values():
            if bridge.process.returncode is None:
                with _suppress_lookup():
                    bridge.process.send_signal(signal.SIGCONT)
                    bridge.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            for bridge in self.bridges.values():
                await bridge.process.wait()


@asynccontextmanager
async def harness(database_url: str, tmp: Path, feeds: tuple[str, ...]) -> AsyncIterator[tuple[Harness, KeyedStream]]:
    stream = KeyedStream({CONSOLE_TOKEN: console_messages(), BENZINGA_TOKEN: benzinga_messages()})
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_loopback, stream.handler))
        h = Harness(database_url, tmp, {"console": url, "benzinga": url.replace("/stream", "/news")}, feeds, nursery)
        try:
            yield h, stream
        finally:
            with trio.CancelScope(shield=True):
                await h.stop_all()
            nursery.cancel_scope.cancel()


@attrs.define
class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return isinstance(value, ProcessLookupError)


def sequence(frame: str) -> int:
    return int(orjson.loads(frame)["data"]["sequence"])


def stored(url: str, query: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as connection:
        found = connection.execute(query).fetchone()
    assert found is not None
    return found


def assert_exactly_what_was_journaled(h: Harness, feed: str = "console") -> None:
    """Every frame read by any process is one row, once; no message was read by two processes."""
    read = {name: [sequence(frame) for _, frame in h.reads(name, feed)] for name in h.bridges}
    everything = [n for numbers in read.values() for n in numbers]
    assert len(everything) == len(set(everything)), "a message was read twice"
    count, distinct, low, high = stored(
        h.database_url,
        "select count(*), count(distinct (raw->>'sequence')::int), min((raw->>'sequence')::int),"
        " max((raw->>'sequence')::int) from options_flow",
    )
    assert (count, distinct) == (len(everything), len(everything))
    assert (low, high) == (min(everything), max(everything))


def replay_journal(h: Harness, name: str, feed: str) -> None:
    """What a killed process journaled but had not committed: ``bridge replay`` of its segments stores it."""
    segments = sorted(str(path) for path in (h.bridges[name].home / "journal" / feed).glob("*.wal"))
    env = clean_env(DATABASE_URL=h.database_url)
    result = subprocess.run([*BRIDGE, "replay", *segments], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


async def test_sigkill_of_the_holder_hands_the_feed_over_within_ttl_and_two_seconds(
    database_url: str, tmp_path: Path
) -> None:
    async with harness(database_url, tmp_path, ("console",)) as (h, stream):
        await h.start("a")
        assert await h.wait_held("console") == "a"
        await h.start("b")
        await trio.sleep(3)  # b is up, a standby: pool open, migrations checked, normalizers built
        assert h.holders() == {"console": "a"}
        assert h.reads("b", "console") == []
        killed_at = h.signal("a", signal.SIGKILL)
        await h.bridges["a"].process.wait()
        assert await h.wait_held("console", not_by="a") == "b"
        await trio.sleep(1)
        await h.stop_all()
        last_a = h.reads("a", "console")[-1][0]
        first_b = h.reads("b", "console")[0][0]
        assert last_a <= killed_at < first_b
        print(f"SIGKILL: blind {first_b - last_a:.2f} s")  # shown with -s
        assert first_b - last_a <= TTL_S + 2, first_b - last_a
        assert stream.doubles == []
        assert stream.connections[CONSOLE_TOKEN] == 2
    replay_journal(h, "a", "console")
    assert_exactly_what_was_journaled(h)


async def test_a_frozen_holder_stops_reading_and_reads_nothing_once_resumed(database_url: str, tmp_path: Path) -> None:
    async with harness(database_url, tmp_path, ("console",)) as (h, stream):
        await h.start("a")
        assert await h.wait_held("console") == "a"
        await h.start("b")
        await trio.sleep(3)
        frozen_at = h.signal("a", signal.SIGSTOP)
        assert await h.wait_held("console", not_by="a") == "b"
        await trio.sleep(1)
        resumed_at = h.signal("a", signal.SIGCONT)
        await trio.sleep(2 * TTL_S)  # a resumes, finds its deadline passed, stops, becomes a standby
        assert h.holders() == {"console": "b"}
        status, metrics = await http_get(h.bridges["a"].port, "/metrics")
        assert (status, 'bridge_lease_held{feed="console"} 0.0' in metrics) == (200, True)
        await h.stop_all()
        reads_a, first_b = h.reads("a", "console"), h.reads("b", "console")[0][0]
        assert reads_a[-1][0] < frozen_at + 0.1  # nothing read after the freeze, nor on resuming
        assert not [at for at, _ in reads_a if at >= resumed_at]
        print(f"SIGSTOP: blind {first_b - reads_a[-1][0]:.2f} s")
        assert first_b - reads_a[-1][0] <= TTL_S + 2, first_b - reads_a[-1][0]
        assert stream.doubles == []
        assert stream.dropped_unresponsive == 1
    assert_exactly_what_was_journaled(h)
    # the gap ledger: a's lost lease is a row, closed once a saw the lease held by b
    with psycopg.connect(database_url) as connection:
        gaps = connection.execute(
            "select instance_id, extract(epoch from started_at), extract(epoch from ended_at) from bridge_feed_gaps"
            " where feed = 'console' and reason = 'lease lost'"
        ).fetchall()
    assert [(instance, ended is not None) for instance, _, ended in gaps] == [("a", True)]
    assert resumed_at <= float(gaps[0][1]) <= float(gaps[0][2]) <= resumed_at + 2 * TTL_S


async def test_sigterm_releases_the_lease_as_soon_as_the_feed_stops(database_url: str, tmp_path: Path) -> None:
    async with harness(database_url, tmp_path, ("console",)) as (h, stream):
        await h.start("a")
        assert await h.wait_held("console") == "a"
        await h.start("b")
        await trio.sleep(3)
        h.signal("a", signal.SIGTERM)
        assert await h.wait_held("console", not_by="a") == "b"
        assert await h.bridges["a"].process.wait() == 0
        await trio.sleep(1)
        await h.stop_all()
        blind = h.reads("b", "console")[0][0] - h.reads("a", "console")[-1][0]
        print(f"SIGTERM: blind {blind:.2f} s")
        assert 0 < blind <= 2, blind  # a rolling deploy's gap per feed
        assert stream.doubles == []
    assert_exactly_what_was_journaled(h)


async def test_three_replicas_spread_two_feeds_and_take_over_a_dead_ones(database_url: str, tmp_path: Path) -> None:
    feeds = ("benzinga", "console")
    async with harness(database_url, tmp_path, feeds) as (h, stream):
        for name in "abc":
            await h.start(name)
        with trio.fail_after(30):
            while len(set(h.holders().values())) < 2:  # ceil(2/3) = 1 each, once they have seen each other
                await trio.sleep(0.1)
        await trio.sleep(2)
        holders = h.holders()
        assert set(holders) == set(feeds) and len(set(holders.values())) == 2
        for name, bridge in h.bridges.items():
            status, metrics = await http_get(bridge.port, "/metrics")
            assert status == 200
            for feed in feeds:
                held = 1.0 if holders[feed] == name else 0.0
                assert f'bridge_lease_held{{feed="{feed}"}} {held}' in metrics, (name, feed)
        (idle,) = set(h.bridges) - set(holders.values())
        killed_at = h.signal(holders["console"], signal.SIGKILL)
        assert await h.wait_held("console", not_by=holders["console"]) == idle
        assert h.holders()["benzinga"] == holders["benzinga"]  # the other feed did not move
        await trio.sleep(1)
        await h.stop_all()
        last, first = h.reads(holders["console"], "console")[-1][0], h.reads(idle, "console")[0][0]
        print(f"SIGKILL of one of three: blind {first - last:.2f} s")
        assert last <= killed_at < first and first - last <= TTL_S + 2, first - last
        assert stream.doubles == []
    replay_journal(h, holders["console"], "console")
    assert_exactly_what_was_journaled(h, "console")
    news = [frame for name in h.bridges for _, frame in h.reads(name, "benzinga")]
    assert len(news) == len(set(news)) > 0
    assert stored(database_url, "select count(*) from news_events") == (len(news),)
