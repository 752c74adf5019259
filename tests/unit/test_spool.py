"""The disk spool keeps batches in order across restarts and survives a torn tail; writers use it in order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import attrs
import trio
import trio.testing

from bridge.adapters.memory import MemoryRepository, MemorySpool
from bridge.adapters.spool import DiskSpool
from bridge.app.stats import PipelineStats
from bridge.app.writer import Delivery, TableWriter
from bridge.domain.ids import stable_id
from bridge.domain.models import AccountRef, BrokerPositionRow, DeadLetter, OptionsFlowRow, RawJson, Row, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def trade(n: int) -> OptionsFlowRow:
    return OptionsFlowRow(
        id=stable_id("t", n), received_at=T0, event_ts=T0, symbol="SPY", option_symbol="SPY251219C00650000",
        side="buy", size=Decimal(n + 1), trade_price=Decimal("1.25"), raw={"n": n, "é": [1.5, None]},
    )  # fmt: skip


def test_batches_round_trip_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    spool.append(1, [("polygon", [trade(1), trade(2)])])
    spool.append(2, [("console", [trade(3)])])
    reopened = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    assert reopened.records == 2
    assert reopened.peek() == (1, [("polygon", [trade(1), trade(2)])])
    reopened.pop()
    again = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    assert again.peek() == (2, [("console", [trade(3)])])
    again.pop()
    assert again.records == 0 and again.path.stat().st_size == 0


def test_every_row_type_survives_the_codec(tmp_path: Path) -> None:
    position = BrokerPositionRow(AccountRef("tastytrade", "5WT"), "SPY", Decimal("-3"), T0, raw={"a": 1})
    letter = DeadLetter(stable_id("d", 1), "console", T0, "invalid JSON", "{")
    firehose_trade = attrs.evolve(trade(1), raw=RawJson('{"ev":"T","p":1.25}'))  # raw kept as its JSON text
    for table, row in ((Table.BROKER_POSITIONS, position), (Table.DEAD_LETTERS, letter),
                       (Table.OPTIONS_FLOW, firehose_trade)):  # fmt: skip
        spool = DiskSpool(tmp_path, table).open()
        spool.append(7, [("f", [row])])
        assert DiskSpool(tmp_path, table).open().peek() == (7, [("f", [row])])


def test_a_torn_last_record_is_cut_off_not_fatal(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    spool.append(1, [("f", [trade(1)])])
    spool.append(2, [("f", [trade(2)])])
    size = spool.path.stat().st_size
    with spool.path.open("r+b") as file:
        file.truncate(size - 5)  # a crash in the middle of the second append
    reopened = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    assert reopened.records == 1 and reopened.torn_tails == 1
    assert reopened.peek() == (1, [("f", [trade(1)])])
    reopened.append(3, [("f", [trade(3)])])  # appending after the cut works
    assert DiskSpool(tmp_path, Table.OPTIONS_FLOW).open().records == 2


def test_a_corrupt_record_is_detected_by_its_checksum(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    spool.append(1, [("f", [trade(1)])])
    data = bytearray(spool.path.read_bytes())
    data[-3] ^= 0xFF
    spool.path.write_bytes(bytes(data))
    assert DiskSpool(tmp_path, Table.OPTIONS_FLOW).open().records == 0


async def test_an_outage_spills_to_the_spool_and_drains_in_order(autojump_clock: trio.testing.MockClock) -> None:
    written: list[int] = []
    down_until = 5.0

    def database(table: Table, rows: Sequence[Row]) -> None:
        if trio.current_time() < down_until:
            raise ConnectionError("connection refused")
        written.extend(int(row.size) - 1 for row in rows if isinstance(row, OptionsFlowRow))

    repository = MemoryRepository(fail=database)
    spool = MemorySpool()
    stats = PipelineStats()
    writer = TableWriter(Table.OPTIONS_FLOW, repository, BatchPolicy(max_rows=10, max_ms=10),
                         BackoffPolicy(initial_s=0.1, max_s=0.5, jitter=0), stats, lambda: T0, None,
                         in_thread=False, spool=spool, buffer_max_rows=30)  # fmt: skip
    send, receive = trio.open_memory_channel[Delivery](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, receive)
        async with send:
            for n in range(300):  # the feed is never held back, although the database is down
                await send.send(Delivery("console", [trade(n)]))
                await trio.sleep(0.01)
            assert trio.current_time() < down_until
    assert spool.appended > 0 and spool.records == 0  # it spilled, then drained everything
    assert written == list(range(300))  # in the order received, each once
    assert stats.buffer_rows[Table.OPTIONS_FLOW] == 0


async def test_a_database_that_is_up_but_behind_holds_the_feed_back_instead_of_spooling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    written: list[int] = []
    buffered: list[int] = []

    def slow_database(table: Table, rows: Sequence[Row]) -> None:
        autojump_clock.jump(0.1)  # every write takes 100 ms: slower than the feed
        buffered.append(writer._memory_rows)
        written.extend(int(row.size) - 1 for row in rows if isinstance(row, OptionsFlowRow))

    spool = MemorySpool()
    writer = TableWriter(Table.OPTIONS_FLOW, MemoryRepository(fail=slow_database), BatchPolicy(max_rows=10, max_ms=10),
                         BackoffPolicy(initial_s=0.1, max_s=0.5, jitter=0), PipelineStats(), lambda: T0, None,
                         in_thread=False, spool=spool, buffer_max_rows=30)  # fmt: skip
    send, receive = trio.open_memory_channel[Delivery](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, receive)
        async with send:
            for n in range(300):
                await send.send(Delivery("console", [trade(n)]))
    assert written == list(range(300))
    assert spool.appended == 0  # nothing went to disk: the database never failed
    assert max(buffered) <= 30 + 10  # memory stayed bounded: the feed waited instead


async def test_a_shutdown_with_the_database_down_spools_every_row_received(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from bridge.app.pipeline import PipelineConfig, run_bridge
    from bridge.domain.normalizers.console import normalize_console
    from tests.unit.fakes import EndlessFeed

    def always_down(table: Table, rows: Sequence[Row]) -> None:
        raise ConnectionError("connection refused")

    calls = 0

    async def stop_after_a_second() -> None:
        nonlocal calls
        calls += 1
        await trio.sleep(1 if calls == 1 else float("inf"))

    feed = EndlessFeed()
    config = PipelineConfig(batching=BatchPolicy(max_rows=50, max_ms=100), shutdown_grace_s=2, spool_dir=tmp_path,
                            buffer_max_rows=10_000, repository_in_thread=False)  # fmt: skip
    flushed = await run_bridge([feed], MemoryRepository(fail=always_down), {"console": normalize_console}, config,
                               PipelineStats(), lambda: T0, stop_after_a_second)  # fmt: skip
    assert flushed  # nothing written, everything spooled: a clean shutdown
    spool = DiskSpool(tmp_path, Table.OPTIONS_FLOW).open()
    spooled = 0
    while (head := spool.peek()) is not None:
        spooled += sum(len(rows) for _, rows in head[1])
        spool.pop()
    assert spooled == feed.emitted > 100  # every row received is on disk, none lost, none twice
