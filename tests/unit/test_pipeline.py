"""The application layer against in-memory fakes: batching, retries, restarts, shutdown."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import orjson
import pytest
import trio
import trio.testing

from bridge.adapters.journal import JournalConfig
from bridge.adapters.memory import MemoryRepository
from bridge.app.pipeline import PipelineConfig, open_pipeline, run_bridge
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import run_supervised
from bridge.domain.models import OptionsFlowRow, ReceivedFrame, Row, Table
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from bridge.domain.ports import DataRejected, RetryLater, TransientWriteError
from tests.unit.fakes import T0, EndlessFeed, ScriptedFeed, trade_frame

NORMALIZERS = {"console": normalize_console}


def config(**overrides: object) -> PipelineConfig:
    defaults: dict[str, object] = {
        "batching": BatchPolicy(max_rows=100, max_ms=50),
        "write_retry": BackoffPolicy(initial_s=0.1, max_s=1, jitter=0),
        "feed_restart": BackoffPolicy(initial_s=1, max_s=8, jitter=0),
        "shutdown_grace_s": 5,
        "repository_in_thread": False,
    }
    return PipelineConfig(**{**defaults, **overrides})  # type: ignore[arg-type]


def clock() -> object:
    return T0


async def never() -> None:
    await trio.sleep_forever()


def stop_after(seconds: float) -> Callable[[], Awaitable[None]]:
    """A stop waiter: the first request comes after ``seconds``, no second one ever."""
    calls = 0

    async def wait() -> None:
        nonlocal calls
        calls += 1
        await trio.sleep(seconds if calls == 1 else float("inf"))

    return wait


def options_writes(repository: MemoryRepository) -> list[int]:
    return [count for table, count in repository.calls if table == Table.OPTIONS_FLOW]


async def test_writers_batch_by_size(autojump_clock: trio.testing.MockClock) -> None:
    repository = MemoryRepository()
    stats = PipelineStats()
    async with open_pipeline(
        repository, NORMALIZERS, config(batching=BatchPolicy(max_rows=3, max_ms=10_000)), stats, clock
    ) as pipeline:
        for n in range(7):
            await pipeline.emit(trade_frame(n))
        await trio.sleep(20)  # batches of 3 fill at once; the seventh row waits out the 10 s linger
    # the last partial batch is flushed on close; two options_flow writers may commit in either order
    assert sorted(options_writes(repository)) == [1, 3, 3]
    assert len(repository.options_flow) == 7


async def test_writers_batch_by_time(autojump_clock: trio.testing.MockClock) -> None:
    write_times: list[float] = []
    repository = MemoryRepository(fail=lambda table, rows: write_times.append(trio.current_time()))
    async with open_pipeline(
        repository,
        NORMALIZERS,
        config(batching=BatchPolicy(max_rows=1000, max_ms=250), options_flow_writers=1),
        PipelineStats(),
        clock,
    ) as pipeline:
        start = trio.current_time()
        await pipeline.emit(trade_frame(1))
        await trio.sleep(0.1)
        await pipeline.emit(trade_frame(2))
        await trio.sleep(1)
        assert len(repository.options_flow) == 2
    assert options_writes(repository) == [2]
    assert write_times[0] - start == pytest.approx(0.25, abs=0.01)


async def test_a_failing_feed_restarts_with_backoff_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = ScriptedFeed([trade_frame(n) for n in range(20)], fail_at={1: 5, 2: 12})
    steady = ScriptedFeed([trade_frame(n, feed="console", sequence=f"s{n}") for n in range(20)], name="steady")
    repository = MemoryRepository()
    stats = PipelineStats()
    started = trio.current_time()
    flushed = await run_bridge([flaky, steady], repository, NORMALIZERS, config(), stats, clock, never)
    assert flushed
    assert flaky.runs == 3 and stats.feed_restarts["console"] == 2
    assert "connection reset on run 2" in stats.feed_last_error["console"]
    assert steady.runs == 1 and stats.feed_restarts["steady"] == 0
    assert len(repository.options_flow) == 40
    # each failed run had delivered frames, so each restart was immediate (at most 0.25 s of jitter)
    assert trio.current_time() - started < 0.04 + 2 * 0.25
    assert stats.feed_state == {"console": FeedState.FINISHED, "steady": FeedState.FINISHED}


async def test_rejected_credentials_wait_the_long_delay(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def refused() -> None:
        attempts.append(trio.current_time())
        raise RetryLater("the server refused the credentials (HTTP 401)", retry_after_s=300)

    with trio.move_on_after(1000):
        await run_supervised("console", refused, BackoffPolicy(initial_s=1, jitter=0), PipelineStats())
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps and all(gap == pytest.approx(300) for gap in gaps)


async def test_shutdown_stops_feeds_then_flushes_everything(autojump_clock: trio.testing.MockClock) -> None:
    feed = EndlessFeed()
    repository = MemoryRepository()
    stats = PipelineStats()
    flushed = await run_bridge(
        [feed],
        repository,
        NORMALIZERS,
        config(batching=BatchPolicy(max_rows=10_000, max_ms=60_000)),
        stats,
        clock,
        stop_after(2.5),
    )
    assert flushed
    assert feed.emitted > 1000
    assert len(repository.options_flow) == feed.emitted  # the unfilled batch was flushed, nothing lost
    assert stats.feed_state["console"] == FeedState.STOPPED


async def test_a_database_outage_is_retried_until_the_rows_land(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outage_until = 3.0
    base = trio.current_time()

    def down_for_a_while(table: Table, rows: Sequence[Row]) -> None:
        if trio.current_time() - base < outage_until:
            raise TransientWriteError("OperationalError: server closed the connection unexpectedly")

    repository = MemoryRepository(fail=down_for_a_while)
    stats = PipelineStats()
    feed = ScriptedFeed([trade_frame(n) for n in range(50)])
    assert await run_bridge([feed], repository, NORMALIZERS, config(), stats, clock, never)
    assert len(repository.options_flow) == 50
    assert stats.write_failures[Table.OPTIONS_FLOW] > 3


async def test_rows_the_database_refuses_are_dead_lettered_and_the_rest_land(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def refuse_size_13(table: Table, rows: Sequence[Row]) -> None:
        if any(isinstance(row, OptionsFlowRow) and row.size == 13 for row in rows):
            raise DataRejected('new row violates check constraint "size_limit"')

    repository = MemoryRepository(fail=refuse_size_13)
    stats = PipelineStats()
    frames = [trade_frame(n, size=13 if n in (4, 17) else 1) for n in range(30)]
    assert await run_bridge(
        [ScriptedFeed(frames)],
        repository,
        NORMALIZERS,
        config(batching=BatchPolicy(max_rows=1000, max_ms=10_000)),
        stats,
        clock,
        never,
    )
    assert len(repository.options_flow) == 28
    letters = list(repository.dead_letters.values())
    assert len(letters) == 2
    assert all("the database refused this options_flow row" in letter.reason for letter in letters)
    assert all('"size":"13"' in letter.frame for letter in letters)
    assert stats.rows_rejected_by_database[Table.OPTIONS_FLOW] == 2


async def test_a_refused_firehose_trade_is_dead_lettered_with_its_event_as_json(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def refuse_everything(table: Table, rows: Sequence[Row]) -> None:
        if table is Table.OPTIONS_FLOW:
            raise DataRejected("value out of range")

    repository = MemoryRepository(fail=refuse_everything)
    event = {"ev": "T", "sym": "O:SPY251219C00650000", "x": 302, "p": 1.5, "s": 2, "t": 1795185000000, "q": 1}
    frame = ReceivedFrame("polygon", T0, orjson.dumps([event]).decode())
    assert await run_bridge([ScriptedFeed([frame])], repository, {"polygon": PolygonNormalizer()}, config(),
                            PipelineStats(), clock, never)  # fmt: skip
    (letter,) = repository.dead_letters.values()
    assert orjson.loads(letter.frame)["raw"] == event  # the event itself, not a string holding it


async def test_the_grace_period_bounds_a_flush_that_cannot_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def always_down(table: Table, rows: Sequence[Row]) -> None:
        raise TransientWriteError("OperationalError: connection refused")

    started = trio.current_time()
    flushed = await run_bridge(
        [EndlessFeed()],
        MemoryRepository(fail=always_down),
        NORMALIZERS,
        config(shutdown_grace_s=5),
        PipelineStats(),
        clock,
        stop_after(1),
    )
    assert not flushed
    assert trio.current_time() - started == pytest.approx(6, abs=0.5)


async def test_frames_of_an_unknown_feed_are_dead_lettered(autojump_clock: trio.testing.MockClock) -> None:
    repository = MemoryRepository()
    feed = ScriptedFeed([trade_frame(1, feed="carrier-pigeon")])
    assert await run_bridge([feed], repository, NORMALIZERS, config(), PipelineStats(), clock, never)
    (letter,) = repository.dead_letters.values()
    assert "no normalizer for feed 'carrier-pigeon'" in letter.reason


async def test_oversized_frames_and_transport_problems_are_dead_lettered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    repository = MemoryRepository()
    stats = PipelineStats()
    big = trade_frame(1, venue="X" * 500)
    broken = attrs.evolve(trade_frame(2), problem=("invalid_utf8", "binary frame is not UTF-8: byte 0xff"))
    async with open_pipeline(repository, NORMALIZERS, attrs.evolve(config(), max_frame_bytes=300), stats,
                             clock) as pipeline:  # fmt: skip
        for frame in (big, broken, trade_frame(3)):
            await pipeline.emit(frame)
    reasons = sorted(letter.reason for letter in repository.dead_letters.values())
    assert reasons[0].startswith("binary frame is not UTF-8")
    assert "exceeds BRIDGE_MAX_FRAME_BYTES (300)" in reasons[1]
    assert len(repository.options_flow) == 1  # the good frame after them landed
    assert stats.dead_letters_by_reason == {("console", "oversized"): 1, ("console", "invalid_utf8"): 1}


async def test_a_restart_replays_the_journal_and_a_replayed_trade_gets_the_side_it_had_live(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The quote came before the checkpoint, the trade after: the restart re-reads the quote (warm-up)."""
    journal = JournalConfig(tmp_path / "journal", warmup_s=6.0)
    quote = {"ev": "Q", "sym": "O:SPY251219C00650000", "bx": 302, "bp": 1.40, "bs": 5, "ax": 302, "ap": 1.50,
             "as": 5, "t": 1795185000000, "q": 1}  # fmt: skip
    trade = {"ev": "T", "sym": "O:SPY251219C00650000", "x": 302, "p": 1.50, "s": 2, "t": 1795185000100, "q": 2}
    at = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    frames = [ReceivedFrame("polygon", at, orjson.dumps([quote]).decode()),
              ReceivedFrame("polygon", at + timedelta(milliseconds=100), orjson.dumps([trade]).decode())]  # fmt: skip

    def down(table: Table, rows: Sequence[Row]) -> None:
        raise TransientWriteError("OperationalError: the database is down")

    first = MemoryRepository(fail=down)  # the trade is journaled, never committed
    polygon = {"polygon": PolygonNormalizer()}
    stopping = config(journal=journal, shutdown_grace_s=1)
    assert await run_bridge([ScriptedFeed(frames, name="polygon")], first, polygon, stopping, PipelineStats(),
                            lambda: at, stop_after(2))  # fmt: skip
    assert not first.options_flow
    second = MemoryRepository()
    assert await run_bridge([], second, {"polygon": PolygonNormalizer()}, config(journal=journal), PipelineStats(),
                            lambda: at, never)  # fmt: skip
    (row,) = second.options_flow.values()
    assert (row.side, row.bid, row.ask) == ("buy", Decimal("1.40"), Decimal("1.50"))  # at the ask: a buy


async def test_an_unencodable_row_is_dead_lettered_alone_and_never_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def refuse_deep(table: Table, rows: Sequence[Row]) -> None:
        if any("deep" in (getattr(row, "raw", None) or {}) for row in rows):
            raise DataRejected("the row cannot be encoded for PostgreSQL: TypeError: Recursion limit reached")

    repository = MemoryRepository(refuse_stage=refuse_deep)
    frames = [trade_frame(n, raw={"deep": True} if n == 3 else {"n": n}) for n in range(6)]
    stats = PipelineStats()
    assert await run_bridge([ScriptedFeed(frames)], repository, NORMALIZERS, config(), stats, clock, never)
    assert len(repository.options_flow) == 5
    (letter,) = repository.dead_letters.values()
    assert "Recursion limit reached" in letter.reason
    assert stats.write_failures.total() == 0  # refused at staging: no write was ever tried with it


async def test_a_bug_in_the_writer_dead_letters_the_batch_instead_of_retrying_it_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def buggy(table: Table, rows: Sequence[Row]) -> None:
        if table is Table.OPTIONS_FLOW:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    repository = MemoryRepository(fail=buggy)
    stats = PipelineStats()
    started = trio.current_time()
    assert await run_bridge([ScriptedFeed([trade_frame(n) for n in range(5)])], repository, NORMALIZERS, config(),
                            stats, clock, never)  # fmt: skip
    assert trio.current_time() - started < 1  # no retry loop
    letters = list(repository.dead_letters.values())
    assert len(letters) == 5
    assert all(letter.reason.startswith("writer_error: TypeError: unsupported operand") for letter in letters)
