"""The journal on real files: restarts, damage, a second process, the disk budget, a full disk."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import trio

import bridge.adapters.journal as journal_module
from bridge.adapters.journal import DamagedRecord, Journal, JournalConfig, JournalLocked, Record, open_journal
from bridge.adapters.recording import read_recording
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def frame(n: int, feed: str = "console", size: int = 40) -> ReceivedFrame:
    return ReceivedFrame(feed, T0 + timedelta(milliseconds=n), orjson.dumps({"n": n, "pad": "x" * size}).decode())


def config(path: Path, **overrides: object) -> JournalConfig:
    """No warm-up window unless a test asks for one: the tests read exactly the frames after the checkpoint."""
    return JournalConfig(directory=path, **{"warmup_s": 0.0, **overrides})  # type: ignore[arg-type]


async def read_n(journal: Journal, feed: str, n: int) -> list[Record | DamagedRecord]:
    reader = journal.reader(feed)
    with trio.fail_after(10):
        return [await reader.receive() for _ in range(n)]


def payloads(items: list[Record | DamagedRecord]) -> list[int]:
    return [orjson.loads(item.frame.text)["n"] for item in items if isinstance(item, Record) and not item.warmup]


async def test_frames_not_acknowledged_are_read_again_after_a_restart(tmp_path: Path) -> None:
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        for n in range(10):
            await journal.append(frame(n))
        items = await read_n(journal, "console", 10)
        log = journal.log_of("console")  # acknowledged after reading, as the writers do
        for item in items[:6]:
            assert isinstance(item, Record)
            log.expect(item.seq, 1, item.frame.received_at)
            log.ack(item.seq)
        for item in items[6:]:
            assert isinstance(item, Record)
            log.expect(item.seq, 1, item.frame.received_at)  # sent to a writer, never committed
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        assert payloads(await read_n(journal, "console", 4)) == [6, 7, 8, 9]
        await journal.append(frame(10))
        assert payloads(await read_n(journal, "console", 1)) == [10]


async def test_a_frame_is_on_disk_within_the_fsync_interval(tmp_path: Path) -> None:
    async with open_journal(config(tmp_path, fsync_interval_s=0.005), PipelineStats()):
        pass
    async with open_journal(config(tmp_path, fsync_interval_s=0.005), PipelineStats()) as journal:
        await journal.append(frame(1))
        await trio.sleep(0.1)
        (segment,) = (tmp_path / "console").glob("*.wal")
        ((_, entry),) = read_recording(segment)  # a journal segment reads like a recording
        assert entry == frame(1)


async def test_flipped_bytes_cost_only_the_damaged_record(tmp_path: Path) -> None:
    stats = PipelineStats()
    async with open_journal(config(tmp_path), stats) as journal:
        for n in range(100):
            await journal.append(frame(n))
    (segment,) = (tmp_path / "console").glob("*.wal")
    data = bytearray(segment.read_bytes())
    middle = data.index(b'\\"n\\":50,')
    data[middle + 6 : middle + 8] = b"77"  # two bytes of record 50 flipped: its checksum no longer matches
    segment.write_bytes(bytes(data))
    async with open_journal(config(tmp_path), stats) as journal:
        items = await read_n(journal, "console", 100)
    damaged = [item for item in items if isinstance(item, DamagedRecord)]
    assert len(damaged) == 1 and damaged[0].reason == "checksum mismatch"
    assert damaged[0].offset == data.rindex(b"\n", 0, middle) + 1  # reported with its position
    assert '\\"n\\":77' in damaged[0].text  # what could be recovered of it
    assert payloads(items) == [n for n in range(100) if n != 50]
    assert stats.journal_damaged_records == 1


async def test_a_damaged_first_record_does_not_stop_the_start(tmp_path: Path) -> None:
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        for n in range(5):
            await journal.append(frame(n))
    (segment,) = (tmp_path / "console").glob("*.wal")
    data = bytearray(segment.read_bytes())
    data[0:4] = b"zzzz"
    segment.write_bytes(bytes(data))
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        items = await read_n(journal, "console", 5)
    assert isinstance(items[0], DamagedRecord)
    assert payloads(items) == [1, 2, 3, 4]


async def test_a_torn_tail_is_reported_and_cut_so_appends_start_clean(tmp_path: Path) -> None:
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        for n in range(3):
            await journal.append(frame(n))
    (segment,) = (tmp_path / "console").glob("*.wal")
    with segment.open("ab") as file:
        file.write(b'1234abcd {"seq":3,"at":"2026-11-20T14:30')  # the process died in the middle of a write
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        await journal.append(frame(3))
        items = await read_n(journal, "console", 5)
    assert isinstance(items[0], DamagedRecord) and items[0].reason == "torn record at the end"
    assert payloads(items) == [0, 1, 2, 3]


async def test_a_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = Journal(config(tmp_path), PipelineStats())
    first.open()
    try:
        second = Journal(config(tmp_path), PipelineStats())
        with pytest.raises(JournalLocked, match=str(tmp_path)):
            second.open()
    finally:
        first.close()
    third = Journal(config(tmp_path), PipelineStats())  # the lock went with the first
    third.open()
    third.close()


async def test_at_the_budget_feeds_wait_and_carry_on_when_space_returns(tmp_path: Path) -> None:
    stats = PipelineStats()
    budget = 256 * 1024
    async with open_journal(config(tmp_path, max_bytes=budget), stats) as journal:
        appended = 0

        async def feed() -> None:
            nonlocal appended
            while appended < 4000:
                await journal.append(frame(appended, size=200))
                appended += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await trio.sleep(0.5)
            assert stats.journal_paused is not None and "BRIDGE_JOURNAL_MAX_BYTES" in stats.journal_paused
            stuck = appended
            await trio.sleep(0.3)
            assert appended == stuck < 4000  # the feed stopped reading
            log = journal.log_of("console")
            reader = journal.reader("console")
            while True:  # the database comes back: everything gets committed
                item = await reader.receive()
                assert isinstance(item, Record)
                log.expect(item.seq, 1, item.frame.received_at)
                log.ack(item.seq)
                if item.seq == 3999:
                    break
        assert appended == 4000
        assert stats.journal_bytes <= budget


async def test_a_full_disk_pauses_the_feeds_without_a_crash_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = PipelineStats()
    real_write = os.write
    full = True

    def write(fd: int, data: bytes | memoryview) -> int:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    async with open_journal(config(tmp_path), stats) as journal:
        for n in range(5):
            await journal.append(frame(n))
        await trio.sleep(0.2)
        assert stats.journal_paused is not None and "disk is full" in stats.journal_paused
        full = False
        with trio.fail_after(5):
            await journal.append(frame(5))  # waits for the disk, then goes on
        assert stats.journal_paused is None
    monkeypatch.setattr(os, "write", real_write)
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        assert payloads(await read_n(journal, "console", 6)) == [0, 1, 2, 3, 4, 5]


async def test_a_restart_rereads_the_warmup_window_for_normalizer_state(tmp_path: Path) -> None:
    segment = 64 * 1024
    async with open_journal(config(tmp_path, segment_max_bytes=segment, warmup_s=60), PipelineStats()) as journal:
        for n in range(2000):
            await journal.append(frame(n, size=100))
        log = journal.log_of("console")
        reader = journal.reader("console")
        while True:
            item = await reader.receive()
            assert isinstance(item, Record)
            log.expect(item.seq, 1, item.frame.received_at)
            if item.seq < 1500:
                log.ack(item.seq)
            if item.seq == 1999:
                break
    async with open_journal(config(tmp_path, segment_max_bytes=segment, warmup_s=60), PipelineStats()) as journal:
        items = await read_n(journal, "console", 2000)
    warm = [item for item in items if isinstance(item, Record) and item.warmup]
    assert warm and all(item.seq < 1500 for item in warm)  # read for state only
    assert payloads(items) == list(range(1500, 2000))  # the rest exactly once


async def test_a_lagging_reader_reads_in_chunks_and_a_record_longer_than_a_chunk_still_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "READ_CHUNK", 4096)  # records of ~1 KB: a chunk holds a few
    sizes = [900] * 40 + [20_000] + [900] * 40
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        for n, size in enumerate(sizes):
            await journal.append(frame(n, size=size))
    async with open_journal(config(tmp_path), PipelineStats()) as journal:
        assert payloads(await read_n(journal, "console", len(sizes))) == list(range(len(sizes)))
