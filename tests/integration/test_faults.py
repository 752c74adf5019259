"""The fault suite: database outages, restarts, stalled and killed streams, fuzzed input — nothing lost or doubled.

Every test reconciles what a loopback server sent against what PostgreSQL holds at the end.
"""

from __future__ import annotations

import functools
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.journal import JournalConfig
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.adapters.simulator.proxy import TcpProxy
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame, Table
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from tests.integration.test_cli import clean_env, free_port, http_get

BRIDGE = [sys.executable, "-m", "bridge"]
TOKEN = "fault-token"


def count(url: str, sql: str = "select count(*), count(distinct id) from options_flow") -> tuple[Any, ...]:
    with psycopg.connect(url) as connection:
        row = connection.execute(sql).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return tuple(row)


@asynccontextmanager
async def proxied(database_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """The database behind a proxy whose line the test can cut."""
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        proxy = TcpProxy.to_unix_socket(f"{host}/.s.PGSQL.{params.get('port', 5432)}")
    else:
        proxy = TcpProxy.to_tcp(host, int(params.get("port", 5432)))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        yield proxy, make_conninfo(**{**params, "host": "127.0.0.1", "port": str(port)})
        nursery.cancel_scope.cancel()


async def test_a_database_outage_loses_and_duplicates_nothing_while_feeds_keep_reading(
    database_url: str, tmp_path: Path
) -> None:
    sent = SentLog()
    stats = PipelineStats()
    config = PipelineConfig(
        batching=BatchPolicy(max_rows=200, max_ms=50),
        write_retry=BackoffPolicy(initial_s=0.1, max_s=0.5),
        feed_restart=BackoffPolicy(initial_s=0.05, max_s=0.2),
        # a small memory tail: during the outage the normalizer falls behind and reads the journal from disk
        journal=JournalConfig(tmp_path / "journal", memory_tail_bytes=64 * 1024),
        channel_capacity=16,
    )
    async with proxied(database_url) as (proxy, url), trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=2000, batch_size=20, total_messages=8000,
            log=sent))  # fmt: skip
        # the proxy runs on this event loop: open the pool from a thread so the loop can serve it
        opening = open_repository(url, acquire_timeout_s=1, open_timeout_s=5)
        repository = await trio.to_thread.run_sync(opening.__enter__)
        try:

            async def outage() -> None:
                await trio.sleep(1.0)
                proxy.break_connections()
                frames_at_start = stats.total_frames
                await trio.sleep(3.0)
                stats_during = stats.total_frames - frames_at_start
                assert stats_during > 50  # the feed kept reading while the database was away
                assert stats.journal_bytes > 256 * 1024  # into the journal, on disk
                proxy.restore()

            nursery.start_soon(outage)
            done = stop_when(lambda: sent.messages_sent >= 8000 and stats.total_frames >= sent.frames_sent and
                             stats.rows_committed.total() >= sent.messages_sent)  # fmt: skip
            feed = ConsoleFeed(url=sim, token=TOKEN, clock=utc_now)
            with trio.fail_after(90):
                assert await run_bridge([feed], repository, normalizers(), config, stats, utc_now, done)
        finally:
            await trio.to_thread.run_sync(opening.__exit__, None, None, None)
        nursery.cancel_scope.cancel()
    assert stats.write_failures.total() > 0
    assert count(database_url) == (sent.messages_by_table["options_flow"],) * 2
    news = count(database_url, "select count(*), count(distinct id) from news_events")
    assert news == (sent.messages_by_table["news_events"],) * 2
    assert stats.journal_damaged_records == 0


_STARTED: list[trio.Process] = []


@pytest.fixture(autouse=True)
def _no_bridge_outlives_its_test() -> Iterator[None]:
    """A failing test leaves no `bridge run` behind to load the machine for the tests after it."""
    yield
    for process in _STARTED:
        if process.returncode is None:
            process.kill()
    _STARTED.clear()


async def run_bridge_process(env: dict[str, str], log: Path) -> trio.Process:
    process = await trio.lowlevel.open_process([*BRIDGE, "run"], env=env, stdout=log.open("ab"), stderr=log.open("ab"))
    _STARTED.append(process)
    return process


async def wait_for(condition: Any, limit_s: float = 60) -> None:
    with trio.fail_after(limit_s):
        while not condition():
            await trio.sleep(0.05)


async def test_sigterm_with_the_database_down_keeps_everything_in_the_journal(
    database_url: str, tmp_path: Path
) -> None:
    """An upstream that never re-sends, a database that is down when SIGTERM comes: nothing is lost.

    The database goes away half way through the stream; the bridge reads the rest, is stopped with SIGTERM
    while the database is still away, and the next start (the database back) commits every message exactly once.
    """
    sent = SentLog()
    log = tmp_path / "bridge.log"
    total = 2000
    async with proxied(database_url) as (proxy, url), trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=1000, batch_size=20, total_messages=total,
            log=sent))  # fmt: skip
        env = clean_env(DATABASE_URL=url, BRIDGE_CONSOLE_URL=sim, BRIDGE_CONSOLE_TOKEN=TOKEN, BRIDGE_HTTP_PORT="0",
                        BRIDGE_HOME=str(tmp_path / "home"), BRIDGE_SHUTDOWN_GRACE_S="2", BRIDGE_LOG_FORMAT="json")
        first = await run_bridge_process(env, log)
        await wait_for(lambda: sent.messages_sent >= total // 2)
        proxy.break_connections()
        await wait_for(lambda: sent.messages_sent >= total)
        await trio.sleep(1.0)  # the bridge reads what is on its socket; the upstream sends nothing more
        first.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await first.wait() == 0  # everything received is on disk
        assert count(database_url)[0] < sent.messages_by_table["options_flow"]  # the database missed some
        journal = tmp_path / "home" / "journal" / "console"
        assert sum(path.stat().st_size for path in journal.glob("*.wal")) > 0
        proxy.restore()
        second = await run_bridge_process(env, log)
        await wait_for(lambda: count(database_url)[0] >= sent.messages_by_table["options_flow"], limit_s=60)
        second.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await second.wait() == 0
        nursery.cancel_scope.cancel()
    assert count(database_url) == (sent.messages_by_table["options_flow"],) * 2


async def test_sigkill_at_random_moments_during_an_outage_loses_at_most_the_fsync_window(
    database_url: str, tmp_path: Path
) -> None:
    """Three SIGKILLs at random moments while the database is down; an upstream that never re-sends.

    What a killed process had read is on disk but for the last fsync interval; what the server wrote
    into a socket nobody read any more is gone with any bridge (no protocol acknowledges it). So every
    message sent more than a short window before each kill must be stored, exactly once.
    """
    rng = random.Random(12)
    sent = SentLog(keep_messages=True)
    log = tmp_path / "bridge.log"
    windows: list[tuple[int, int]] = []
    async with proxied(database_url) as (proxy, url), trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=2000, batch_size=20, total_messages=9000,
            log=sent))  # fmt: skip
        env = clean_env(DATABASE_URL=url, BRIDGE_CONSOLE_URL=sim, BRIDGE_CONSOLE_TOKEN=TOKEN, BRIDGE_HTTP_PORT="0",
                        BRIDGE_HOME=str(tmp_path / "home"), BRIDGE_LOG_FORMAT="json", BRIDGE_JOURNAL_FSYNC_MS="5")
        process = await run_bridge_process(env, log)
        await wait_for(lambda: sent.messages_sent >= 500)
        proxy.break_connections()  # the outage starts; it lasts across every kill
        for _ in range(3):
            await trio.sleep(0.6 + rng.random())
            window_start = len(sent.messages)
            await trio.sleep(0.3)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            windows.append((window_start, len(sent.messages)))
            process = await run_bridge_process(env, log)
        proxy.restore()
        await wait_for(lambda: sent.messages_sent >= 9000)
        lost_at_most = sum(end - start for start, end in windows)
        await wait_for(
            lambda: count(database_url)[0] >= sent.messages_by_table["options_flow"] - lost_at_most, limit_s=60
        )
        await trio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
        nursery.cancel_scope.cancel()
    total, distinct = count(database_url)
    assert total == distinct  # no duplicates
    with psycopg.connect(database_url) as connection:
        stored = {row[0] for row in connection.execute("select id from options_flow")}
    in_windows = {id(message) for start, end in windows for message in sent.messages[start:end]}
    trades = [(trade_id(message), id(message)) for message in sent.messages if message["type"] == "options_flow"]
    lost = [key for key, _ in trades if key not in stored]
    outside = [key for key, origin in trades if key not in stored and origin not in in_windows]
    assert not outside, f"{len(outside)} trade(s) lost outside the 0.3 s before a kill"
    assert len(stored) == len(trades) - len(lost)


def trade_id(message: dict[str, Any]) -> Any:
    """The id the bridge gives this Developer Console trade (deterministic: it hashes the message's data)."""
    frame = ReceivedFrame("console", utc_now(), orjson.dumps(message).decode())
    (row,) = normalize_console(frame).rows
    return row.id


async def test_a_stalled_stream_is_dropped_and_reconnected(database_url: str) -> None:
    sent = SentLog()
    stats = PipelineStats()
    with open_repository(database_url) as repository:
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(functools.partial(
                serve_console_simulator, token=TOKEN, messages_per_second=None, batch_size=10,
                total_messages=300, stall_after_frames=8, log=sent))  # fmt: skip
            feed = ConsoleFeed(url=sim, token=TOKEN, clock=utc_now, max_silence_s=0.3)
            config = PipelineConfig(feed_restart=BackoffPolicy(initial_s=0.01, max_s=0.05))
            done = stop_when(lambda: stats.rows_normalized.total() >= 300)
            with trio.fail_after(60):
                assert await run_bridge([feed], repository, normalizers(), config, stats, utc_now, done)
            nursery.cancel_scope.cancel()
    assert sent.extra["stalls"] >= 3
    assert "StreamStalled: no message for 0.3 s" in stats.feed_last_error["console"]
    assert count(database_url, "select count(*) from options_flow")[0] == sent.messages_by_table["options_flow"]


# The good trades happen "now": the bridge dead-letters trades more than 7 days older than their arrival.
NOW_MS = int(time.time() * 1000)
GOOD = st.integers(min_value=0, max_value=10**9).map(
    lambda n: orjson.dumps({"type": "options_flow", "data": {
        "event_ts": NOW_MS + n % 1000, "option_symbol": "SPY251219C00650000", "size": 1 + n % 9,
        "trade_price": 1.5, "sequence": n}}).decode())  # fmt: skip
BAD = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
    st.sampled_from([
        "NaN", '{"type": "options_flow", "data": {"size": NaN}}', '[{"type": "news_events", "data": {}}]',
        '{"type": "options_flow", "data": {"event_ts": 99999999999999, "option_symbol": "SPY251219C00650000",'
        ' "size": 1}}',
        '{"type": "options_flow", "data": {"event_ts": "2099-01-01T00:00:00Z", "option_symbol": "X", "size": 1}}',
        '{"type": "options_flow", "data": {"event_ts": 1795185000000, "option_symbol": "SPY251219C00650000",'
        ' "size": 1e400}}',
        '{"type": "broker_positions", "data": {"broker": "t", "external_account_id": "1", "symbol": "S",'
        ' "qty": Infinity, "updated_at": 1795185000000}}',
        '{"type": "news_events", "data": {"headline": "nul \\u0000 inside"}}',
    ]),
)  # fmt: skip


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(st.booleans(), GOOD, BAD), min_size=1, max_size=40))
def test_a_fuzzed_stream_of_good_and_bad_frames(repository: PostgresRepository, frames: list[Any]) -> None:
    stream = [good if pick_good else bad for pick_good, good, bad in frames]
    good_ids = {orjson.loads(good)["data"]["sequence"] for pick_good, good, _ in frames if pick_good}
    before = repository.count_rows()

    class Fuzzed:
        name, finite = "fuzz", True

        async def run(self, sink: Any) -> None:
            for n, text in enumerate(stream):
                await sink.emit(ReceivedFrame("console", utc_now(), text + " " * (n % 2)))

    async def main() -> PipelineStats:
        async def never() -> None:
            await trio.sleep_forever()

        stats = PipelineStats()
        assert await run_bridge([Fuzzed()], repository, normalizers(), PipelineConfig(), stats, utc_now, never)
        return stats

    stats = trio.run(main)
    after = repository.count_rows()
    bad_frames = sum(1 for pick_good, _, _ in frames if not pick_good)
    assert stats.frames_received["console"] == len(stream)  # the stream went on to the end
    assert stats.frames_dead_lettered["console"] <= bad_frames
    assert after[Table.OPTIONS_FLOW] - before[Table.OPTIONS_FLOW] <= len(good_ids)  # ids repeat across examples
    assert good_ids <= _stored_sequences(repository)  # every good message landed, whatever surrounded it


def _stored_sequences(repository: PostgresRepository) -> set[int]:
    with repository.pool.connection() as connection:
        rows = connection.execute("select (raw->>'sequence')::bigint from options_flow where source = 'dev_console'")
        return {row[0] for row in rows.fetchall() if row[0] is not None}


@pytest.mark.parametrize("leases", ["off", "on"])
async def test_a_database_down_at_start_is_an_outage_not_a_failure(
    database_url: str, tmp_path: Path, leases: str
) -> None:
    """`bridge run` starts with the database unreachable: it stays up, is not ready, and catches up exactly.

    One replica (leases off, the default) journals the stream meanwhile. With leases a feed runs only under
    its lease, and no lease can be taken without the database (another replica may hold it), so the feed
    does not connect until the database answers (docs/leases.md); this upstream resumes where its last
    client stopped, so nothing is lost either way.
    """
    sent = SentLog()
    log = tmp_path / "bridge.log"
    port = free_port()
    async with proxied(database_url) as (proxy, url), trio.open_nursery() as nursery:
        proxy.break_connections()
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=1000, batch_size=20, total_messages=3000,
            log=sent))  # fmt: skip
        env = clean_env(DATABASE_URL=url, BRIDGE_CONSOLE_URL=sim, BRIDGE_CONSOLE_TOKEN=TOKEN,
                        BRIDGE_HTTP_PORT=str(port), BRIDGE_HTTP_HOST="127.0.0.1", BRIDGE_LEASES=leases,
                        BRIDGE_HOME=str(tmp_path / "home"), BRIDGE_LOG_FORMAT="json")  # fmt: skip
        process = await run_bridge_process(env, log)
        if leases == "off":
            await wait_for(lambda: sent.messages_sent >= 1000)  # read and journaled while the database is away
        else:
            await trio.sleep(4)
        assert process.returncode is None  # it did not exit: an outage, not a failure
        status, body = await http_get(port, "/readyz")
        assert status == 503 and "database" in body
        assert count(database_url)[0] == 0
        if leases == "on":
            status, metrics = await http_get(port, "/metrics")
            assert 'bridge_lease_held{feed="console"} 0.0' in metrics
            assert sent.connections == 0  # no lease: the feed did not connect
        proxy.restore()
        await wait_for(lambda: sent.messages_sent >= 3000)
        await wait_for(lambda: count(database_url)[0] >= sent.messages_by_table["options_flow"], limit_s=60)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
        nursery.cancel_scope.cancel()
    assert count(database_url) == (sent.messages_by_table["options_flow"],) * 2
