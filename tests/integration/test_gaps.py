"""The gap ledger against real processes and PostgreSQL: disconnects, SIGTERM and SIGKILL each leave one row."""

from __future__ import annotations

import functools
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import trio

from bridge.adapters.memory import MemoryRepository
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.app.gaps import CRASHED
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.stats import PipelineStats
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.policies import BackoffPolicy
from tests.integration.test_cli import clean_env
from tests.integration.test_faults import TOKEN, run_bridge_process, wait_for
from tests.unit.fakes import T0, ScriptedFeed, trade_frame


def gaps(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(
            "select feed, reason, started_at, ended_at, ended_at - started_at from bridge_feed_gaps"
            " where feed <> 'bridge.gaps' order by started_at"
        ).fetchall()


async def test_a_failing_feed_leaves_one_closed_gap_per_outage_and_counts_blind_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = ScriptedFeed([trade_frame(n) for n in range(30)], fail_at={1: 10, 2: 20})
    repository = MemoryRepository()
    stats = PipelineStats()
    clock_now = [T0]

    def clock() -> Any:
        return clock_now[0]

    async def advance() -> None:  # wall time moves with trio's virtual clock
        start = trio.current_time()
        while True:
            await trio.sleep(0.01)
            clock_now[0] = T0 + timedelta(seconds=trio.current_time() - start)

    config = PipelineConfig(feed_restart=BackoffPolicy(initial_s=1, max_s=1, jitter=0), repository_in_thread=False)

    async def never() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(advance)
        assert await run_bridge([feed], repository, {"console": normalize_console}, config, stats, clock, never)
        nursery.cancel_scope.cancel()
    rows = sorted(repository.feed_gaps.values(), key=lambda row: row.started_at)
    assert [row.reason for row in rows] == ["ConnectionError: connection reset on run 1",
                                            "ConnectionError: connection reset on run 2"]  # fmt: skip
    assert all(row.ended_at is not None and row.ended_at > row.started_at for row in rows)
    assert 0 < stats.blind_seconds["console"] < 1.0  # productive connections reconnect at once
    assert len(repository.options_flow) == 30


async def test_a_restart_is_one_gap_row_closed_by_the_next_start_and_a_kill_is_one_too(
    database_url: str, tmp_path: Path
) -> None:
    sent = SentLog()
    log = tmp_path / "bridge.log"
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve_console_simulator, token=TOKEN, messages_per_second=500, batch_size=10, log=sent))  # fmt: skip
        env = clean_env(DATABASE_URL=database_url, BRIDGE_CONSOLE_URL=sim, BRIDGE_CONSOLE_TOKEN=TOKEN,
                        BRIDGE_HTTP_PORT="0", BRIDGE_HOME=str(tmp_path / "home"), BRIDGE_LOG_FORMAT="json",
                        BRIDGE_INSTANCE_ID="pod-a")  # fmt: skip
        process = await run_bridge_process(env, log)
        await wait_for(lambda: sent.messages_sent >= 500)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
        await trio.sleep(1.0)  # the feed is blind while no bridge runs
        process = await run_bridge_process(env, log)
        before = sent.messages_sent
        await wait_for(lambda: sent.messages_sent >= before + 500)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await trio.sleep(0.5)
        process = await run_bridge_process(env, log)
        before = sent.messages_sent
        await wait_for(lambda: sent.messages_sent >= before + 500)
        await wait_for(lambda: len([g for g in gaps(database_url) if g[3] is not None]) >= 2)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
        nursery.cancel_scope.cancel()
    rows = gaps(database_url)
    assert [(feed, reason) for feed, reason, *_ in rows[:2]] == [("console", "shutdown"), ("console", CRASHED)]
    for _, _, started, ended, blind in rows[:2]:
        assert ended is not None and ended > started
        assert blind.total_seconds() < 30
    assert rows[0][4].total_seconds() >= 1.0  # the restart's gap spans the time no bridge ran
    assert len(rows) == 3 and rows[2][1] == "shutdown" and rows[2][3] is None  # the last stop: open until a start
