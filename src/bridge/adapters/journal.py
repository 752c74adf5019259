"""The journal: every received frame is on local disk before it is normalized.

Layout: one directory per feed under the journal directory, each a sequence of segment files
``<first seq>.wal`` and a ``checkpoint`` file. A record is one line::

    <crc32 of the JSON, 8 hex digits> {"seq": 12, "at": "2026-11-20T14:30:00.123456Z", "feed": "polygon", "frame": "…"}

JSON never holds a raw newline, so a line is a record and a damaged record costs only its own line:
a flipped byte fails the checksum, a torn tail is a last line without its newline; the reader skips
either, reports it with its file and offset, and goes on with the next line. The JSON part is a
recording entry plus ``seq``, so ``bridge replay`` reads segments as it reads recordings.

Appends land in a memory buffer on the trio thread; one flusher task writes and fsyncs the buffer
every ``fsync_interval_s`` in a worker thread (group fsync), so SIGKILL or power loss costs at most
what arrived within one interval. Each feed's normalizer reads its log with a cursor: while it keeps
up, straight from a bounded memory tail of the latest records; when it falls behind (the database is
away and the writers are full), from the segment files, until it has caught up. The journal, not
memory, is therefore what holds a database outage, bounded by ``max_bytes`` on disk.

The checkpoint of a feed is the oldest frame not yet done (its rows committed or dead-lettered):
``ack`` moves it. Segments wholly before the checkpoint are deleted (after ``retain_s``, and once
they are older than ``warmup_s`` before it: a restart re-reads that much before the checkpoint to
rebuild stateful normalizers, the NBBO book, without storing those frames' rows again).

One process per journal directory: an exclusive ``flock`` on ``<dir>/lock``, released by the kernel
when the process dies however it dies (a pid file would outlive a SIGKILL).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import attrs
import orjson
import trio
from trio_util import AsyncValue, RepeatedEvent

from bridge.adapters.recording import InvalidRecordingLine, decode_record, encode_record, format_at
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame
from bridge.logs import get_logger

log = get_logger(__name__, component="journal")

SEGMENT_SUFFIX: Final = ".wal"
CHECKPOINT: Final = "checkpoint"
LOCK: Final = "lock"
DISK_FULL_RETRY_S: Final = 1.0
CHECKPOINT_INTERVAL_S: Final = 0.2
READ_CHUNK: Final = 2 * 1024 * 1024
"""Bytes of a segment a lagging reader takes at a time."""
RESUME_FRACTION: Final = 0.9
DECODED_WEIGHT: Final = 6
"""What a frame weighs in memory, per character of its text, when it carries its parsed JSON (``decoded``):
a Polygon frame's dicts and strings take about 5.4 times its text (``bench/``)."""
"""Feeds paused at the budget read again once the journal is back under this share of it."""


class JournalLocked(Exception):
    """Another process holds this journal directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            f"the journal directory {directory} is in use by another bridge process; give each process its"
            " own BRIDGE_JOURNAL_DIR"
        )
        self.directory = directory


class JournalUnusable(Exception):
    """The journal directory cannot be created or written."""


@attrs.frozen
class JournalConfig:
    directory: Path | None
    """``None``: memory only (``bridge replay``, unit tests): no durability, no files."""
    max_bytes: int = 2 * 1024**3
    fsync_interval_s: float = 0.005
    retain_s: float = 0.0
    warmup_s: float = 6.0
    """Re-read this much before the checkpoint at start, to rebuild normalizer state (quote max age + margin)."""
    segment_max_bytes: int = 16 * 1024**2
    memory_tail_bytes: int = 32 * 1024**2
    """Per feed: records kept in memory for a normalizer that keeps up; beyond it, it reads from disk."""


@attrs.frozen
class Record:
    seq: int
    frame: ReceivedFrame
    warmup: bool = False
    """Before the checkpoint: read to rebuild normalizer state only; its rows were already stored."""

    @property
    def nbytes(self) -> int:
        """What it holds in memory: its text, and the parsed JSON a feed may have attached to it."""
        return len(self.frame.text) * (1 if self.frame.decoded is None else DECODED_WEIGHT) + 96


@attrs.frozen
class DamagedRecord:
    """A line of a segment that is not a valid record: what could be recovered of it, and where."""

    feed: str
    path: Path
    offset: int
    reason: str
    text: str


def read_segment(
    path: Path, feed: str, start: int = 0, end: int | None = None
) -> tuple[list[tuple[int, ReceivedFrame] | DamagedRecord], int, bytes]:
    """The complete lines of ``path`` between byte offsets ``start`` and ``end``: (records or damage,
    the offset just past the last complete line, the bytes of an incomplete last line)."""
    with path.open("rb") as file:
        file.seek(start)
        data = file.read() if end is None else file.read(max(0, end - start))
    complete = data.rfind(b"\n") + 1
    items: list[tuple[int, ReceivedFrame] | DamagedRecord] = []
    offset = start
    for line in data[:complete].split(b"\n")[:-1]:
        at = offset
        offset += len(line) + 1
        if not line:
            continue
        try:
            items.append(decode_record(line))
        except InvalidRecordingLine as exc:
            items.append(DamagedRecord(feed, path, at, str(exc), line.decode("utf-8", errors="backslashreplace")))
    return items, start + complete, data[complete:]


@attrs.define
class _Segment:
    first_seq: int
    path: Path
    size: int = 0
    """Bytes in the file (updated by the writing thread)."""
    readable: int = 0
    """Bytes a reader may read: set on the event loop once a write has returned, together with ``written_seq``,
    so a reader never sees records newer than ``written_seq`` (and never skips them)."""
    last_seq: int = -1
    """The last seq written to it (-1: none yet)."""
    last_at: datetime | None = None


@attrs.define
class FeedLog:
    """One feed's part of the journal: its segments, its memory tail, its cursor and its checkpoint."""

    feed: str
    directory: Path | None
    next_seq: int = 0
    segments: list[_Segment] = attrs.Factory(list)
    buffer: bytearray = attrs.Factory(bytearray)
    buffered_first_seq: int = 0
    buffered_last_seq: int = -1
    buffered_last_at: datetime | None = None
    """When the last buffered record was received: its segment's ``last_at`` once written (so cleanup
    need not read a whole segment back to learn it)."""
    partial: bool = False
    """The last write stopped mid-record (disk full): the rest must go to the same segment."""
    written_seq: int = -1
    """Records up to here are in the segment files (written to the OS)."""
    tail: deque[Record] = attrs.Factory(deque)
    tail_bytes: int = 0
    memory_mode: bool = True
    cursor: int = 0
    """The next seq the normalizer reads."""
    warmup_from: int | None = None
    read_at: tuple[Path, int, int] | None = None
    """Where the last disk read stopped: (segment, byte offset, next seq there)."""
    recovered: list[DamagedRecord] = attrs.Factory(list)
    """Damage found at start (a torn tail), reported by the reader first."""
    pending: deque[int] = attrs.Factory(deque)
    """Seqs read and not yet done, in order."""
    outstanding: dict[int, int] = attrs.Factory(dict)
    """seq → deliveries not yet committed."""
    at_of: dict[int, datetime] = attrs.Factory(dict)
    checkpoint_at: datetime | None = None
    saved_checkpoint: int = -1
    changed: RepeatedEvent = attrs.Factory(RepeatedEvent)
    """Set on every change a waiter may care about (an append, a read, an acknowledgement)."""
    fd: int | None = None

    @property
    def appended_seq(self) -> int:
        return self.next_seq - 1

    def notify(self) -> None:
        self.changed.set()

    # -- checkpoint ---------------------------------------------------------------------------------

    def watermark(self) -> int:
        """The oldest seq not done: the first pending one, else the next the normalizer reads."""
        return self.pending[0] if self.pending else self.cursor

    def expect(self, seq: int, deliveries: int, at: datetime) -> None:
        """The normalizer read ``seq`` and sent ``deliveries`` for it to the writers (0: done already)."""
        if deliveries <= 0:
            if not self.pending:
                self.checkpoint_at = at
                self.notify()
            return
        self.pending.append(seq)
        self.outstanding[seq] = deliveries
        self.at_of[seq] = at

    def add(self, seq: int, deliveries: int = 1) -> None:
        """More deliveries for ``seq`` (rows the database refused, sent on as dead letters)."""
        if seq in self.outstanding:
            self.outstanding[seq] += deliveries

    def ack(self, seq: int) -> None:
        """One delivery of ``seq`` is committed."""
        left = self.outstanding.get(seq)
        if left is None:
            return
        if left > 1:
            self.outstanding[seq] = left - 1
            return
        del self.outstanding[seq]
        while self.pending and self.pending[0] not in self.outstanding:
            done = self.pending.popleft()
            self.checkpoint_at = self.at_of.pop(done, self.checkpoint_at)
        self.notify()

    @property
    def done(self) -> bool:
        """Everything appended has been read and committed."""
        return not self.pending and self.cursor > self.appended_seq and not self.recovered


@attrs.define
class Journal:
    """The journal of every feed of one process (see the module docstring)."""

    config: JournalConfig
    stats: PipelineStats
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    logs: dict[str, FeedLog] = attrs.Factory(dict)
    new_feed: Callable[[str], None] | None = None
    """Called when a feed's log is created (the pipeline starts its normalizer)."""
    on_pause: Callable[[str | None], None] | None = None
    """Called with the reason when the feeds stop reading, with ``None`` when they read again (the gap ledger)."""
    total_bytes: int = 0
    """Segment bytes on disk plus buffered ones."""
    _paused: AsyncValue[str | None] = attrs.Factory(lambda: AsyncValue(None))
    """Why the feeds may not append (journal budget, disk full), or ``None``."""
    _data: trio.Event = attrs.Factory(trio.Event)
    _lock_fd: int | None = None
    _io: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    _flushing: trio.Lock = attrs.Factory(trio.Lock)
    _reads: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(2))

    @property
    def paused(self) -> str | None:
        reason: str | None = self._paused.value
        return reason

    @property
    def durable(self) -> bool:
        return self.config.directory is not None

    @property
    def segment_max_bytes(self) -> int:
        return max(64 * 1024, min(self.config.segment_max_bytes, self.config.max_bytes // 8))

    # -- opening ------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take the directory's lock and load every feed's log (sync: at start, before any task)."""
        self.stats.journal_budget_bytes = self.config.max_bytes if self.durable else None
        directory = self.config.directory
        if directory is None:
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalUnusable(
                f"cannot use the journal directory {directory} (BRIDGE_JOURNAL_DIR): {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(directory) from None
        self._lock_fd = fd
        for child in sorted(directory.iterdir()):
            if child.is_dir():
                self.logs[child.name] = self._load(child.name, child)
        self.total_bytes = sum(s.size for feed_log in self.logs.values() for s in feed_log.segments)
        self._update_stats()

    def close(self) -> None:
        for feed_log in self.logs.values():
            if feed_log.fd is not None:
                os.close(feed_log.fd)
                feed_log.fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self, feed: str, directory: Path) -> FeedLog:
        feed_log = FeedLog(feed, directory)
        paths = [path for path in directory.glob(f"*{SEGMENT_SUFFIX}") if path.stem.isdigit()]
        for path in sorted(paths, key=lambda p: int(p.stem)):
            size = path.stat().st_size
            feed_log.segments.append(_Segment(int(path.stem), path, size, size))
        for before, after in itertools.pairwise(feed_log.segments):
            before.last_seq = after.first_seq - 1
        checkpoint_seq, checkpoint_at = self._read_checkpoint(directory / CHECKPOINT)
        if feed_log.segments:
            last = feed_log.segments[-1]
            items, complete, torn = read_segment(last.path, feed)
            last.last_seq = last.first_seq - 1
            for item in items:
                if not isinstance(item, DamagedRecord):
                    last.last_seq = max(last.last_seq, item[0])
                    last.last_at = item[1].received_at
            if torn:  # a write the process did not finish: report it, and cut it off so appends start clean
                text = torn.decode("utf-8", errors="backslashreplace")
                feed_log.recovered.append(DamagedRecord(feed, last.path, complete, "torn record at the end", text))
                os.truncate(last.path, complete)
                last.size = last.readable = complete
            feed_log.next_seq = last.last_seq + 1
            checkpoint_seq = max(checkpoint_seq, feed_log.segments[0].first_seq)
            checkpoint_seq = min(checkpoint_seq, feed_log.next_seq)
        else:
            feed_log.next_seq = checkpoint_seq
        feed_log.written_seq = feed_log.next_seq - 1
        feed_log.buffered_first_seq = feed_log.next_seq
        feed_log.cursor = feed_log.saved_checkpoint = checkpoint_seq
        feed_log.checkpoint_at = checkpoint_at
        feed_log.memory_mode = feed_log.cursor > feed_log.appended_seq
        if not feed_log.memory_mode:
            feed_log.warmup_from = self._warmup_start(feed_log)
            log.info(
                "the journal replays from its checkpoint",
                feed=feed,
                checkpoint=checkpoint_seq,
                frames=feed_log.appended_seq - checkpoint_seq + 1,
                warmup_from=feed_log.warmup_from,
            )
        return feed_log

    def _warmup_start(self, feed_log: FeedLog) -> int | None:
        """The first seq to re-read for normalizer state: segments that reach into the warm-up window."""
        if feed_log.checkpoint_at is None or self.config.warmup_s <= 0:
            return None
        since = feed_log.checkpoint_at - timedelta(seconds=self.config.warmup_s)
        start = feed_log.cursor
        for segment in feed_log.segments:
            if segment.first_seq >= feed_log.cursor:
                break
            newest = segment.last_at or _last_at(segment)
            if newest is None or newest >= since:
                start = min(start, segment.first_seq)
        return start if start < feed_log.cursor else None

    @staticmethod
    def _read_checkpoint(path: Path) -> tuple[int, datetime | None]:
        try:
            saved = orjson.loads(path.read_bytes())
            at = saved.get("at")
            return int(saved["seq"]), datetime.fromisoformat(at) if isinstance(at, str) else None
        except FileNotFoundError:
            return 0, None
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("the journal checkpoint is damaged; replaying the whole journal", path=str(path))
            return 0, None

    def log_of(self, feed: str) -> FeedLog:
        feed_log = self.logs.get(feed)
        if feed_log is None:
            directory = self.config.directory / feed if self.config.directory is not None else None
            feed_log = self.logs[feed] = FeedLog(feed, directory)
            if self.new_feed is not None:
                self.new_feed(feed)
        return feed_log

    # -- appending ----------------------------------------------------------------------------------

    async def append(self, frame: ReceivedFrame) -> None:
        """Journal one frame (waiting while the journal is full); the feed's normalizer then reads it."""
        feed_log = self.log_of(frame.feed)
        while self.paused is not None or (not self.durable and not self._tail_has_room(feed_log)):
            if self.paused is not None:
                await self._paused.wait_value(lambda reason: reason is None)
            else:
                await feed_log.changed.wait()
        seq = feed_log.next_seq
        feed_log.next_seq += 1
        record = Record(seq, frame)
        if self.durable:
            encoded = encode_record(seq, frame)
            if not feed_log.buffer:
                feed_log.buffered_first_seq = seq
            feed_log.buffer += encoded
            feed_log.buffered_last_seq = seq
            feed_log.buffered_last_at = frame.received_at
            self.total_bytes += len(encoded)
            self._data.set()
            if self.total_bytes >= self.config.max_bytes:
                self._pause(
                    f"the journal reached its budget of {self.config.max_bytes:,} bytes (BRIDGE_JOURNAL_MAX_BYTES)"
                )
        if feed_log.memory_mode and self._tail_has_room(feed_log):
            feed_log.tail.append(record)
            feed_log.tail_bytes += record.nbytes
        elif self.durable:
            feed_log.memory_mode = False  # the normalizer is behind: it reads from disk until it catches up
        feed_log.notify()
        await trio.lowlevel.checkpoint()

    def append_nowait(self, frame: ReceivedFrame) -> None:
        """Journal a record the bridge makes itself (a gap event), past the budget: they are few and small,
        and the one saying the journal is full must get in."""
        feed_log = self.log_of(frame.feed)
        seq = feed_log.next_seq
        feed_log.next_seq += 1
        if self.durable:
            encoded = encode_record(seq, frame)
            if not feed_log.buffer:
                feed_log.buffered_first_seq = seq
            feed_log.buffer += encoded
            feed_log.buffered_last_seq = seq
            self.total_bytes += len(encoded)
            self._data.set()
        if feed_log.memory_mode:
            record = Record(seq, frame)
            feed_log.tail.append(record)
            feed_log.tail_bytes += record.nbytes
        feed_log.notify()

    def _tail_has_room(self, feed_log: FeedLog) -> bool:
        return feed_log.tail_bytes < self.config.memory_tail_bytes

    def _pause(self, reason: str) -> None:
        was = self.paused
        self._paused.value = reason
        self.stats.journal_paused = reason
        if was is None:
            log.warning("feeds stop reading: the journal cannot take more", reason=reason)
            if self.on_pause is not None:
                self.on_pause(reason)

    def _resume(self) -> None:
        if self.paused is not None:
            log.info("feeds read again: the journal has room", was=self.paused)
            self._paused.value = None
            self.stats.journal_paused = None
            if self.on_pause is not None:
                self.on_pause(None)

    # -- reading --------------------------------------------------------------------------------------

    def reader(self, feed: str) -> JournalReader:
        """The one reader of ``feed``'s log: its records from the checkpoint on (warm-up records first)."""
        return JournalReader(self, self.log_of(feed))

    async def _read_disk(self, feed_log: FeedLog) -> list[Record | DamagedRecord]:
        """Records from the cursor (or the warm-up start) up to what is written, at most ``READ_CHUNK`` bytes of
        one segment at a time (a catch-up after a long outage holds one chunk's frames in memory, not a segment's)."""
        upto = feed_log.written_seq
        start = feed_log.warmup_from if feed_log.warmup_from is not None else feed_log.cursor
        out: list[Record | DamagedRecord] = []
        segments = list(feed_log.segments)
        for index, segment in enumerate(segments):
            if segment.first_seq > upto:
                break
            last = index == len(segments) - 1
            if not last and segment.last_seq < start:
                continue
            offset = 0
            if feed_log.read_at is not None and feed_log.read_at[0] == segment.path and feed_log.read_at[2] <= start:
                offset = feed_log.read_at[1]
            limit = min(segment.readable, offset + READ_CHUNK)
            items, end, _ = await trio.to_thread.run_sync(
                read_segment, segment.path, feed_log.feed, offset, limit, limiter=self._reads
            )
            if end == offset and limit < segment.readable:  # one record longer than a chunk: read it whole
                limit = segment.readable
                items, end, _ = await trio.to_thread.run_sync(
                    read_segment, segment.path, feed_log.feed, offset, limit, limiter=self._reads
                )
            next_seq = start
            for item in items:
                if isinstance(item, DamagedRecord):
                    self.stats.journal_damaged_records += 1
                    log.error(
                        "skipped a damaged journal record",
                        feed=feed_log.feed,
                        file=str(item.path),
                        offset=item.offset,
                        reason=item.reason,
                    )
                    out.append(item)
                    continue
                seq, frame = item
                next_seq = max(next_seq, seq + 1)
                if seq < start or seq > upto:
                    continue
                if seq < feed_log.cursor:
                    out.append(Record(seq, frame, warmup=True))
                    continue
                feed_log.cursor = seq + 1  # a gap before it was damaged records (reported above)
                out.append(Record(seq, frame))
            feed_log.read_at = (segment.path, end, min(next_seq, upto + 1))
            more_here = limit < segment.readable
            if more_here or (not last and segment.last_seq < upto):
                if feed_log.warmup_from is not None:  # the warm-up goes on after this chunk, if it is still before
                    after = next_seq if more_here else segment.last_seq + 1
                    feed_log.warmup_from = after if after < feed_log.cursor else None
                return out
            start = feed_log.cursor
        feed_log.warmup_from = None
        feed_log.cursor = max(feed_log.cursor, upto + 1)
        feed_log.notify()
        return out

    # -- flushing, checkpoints, cleanup ----------------------------------------------------------------

    async def serve_flush(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write and fsync buffered records every ``fsync_interval_s``; save checkpoints; drop done segments."""
        task_status.started()
        if not self.durable:
            await trio.sleep_forever()
        last_checkpoint = trio.current_time()
        while True:
            with trio.move_on_after(CHECKPOINT_INTERVAL_S):
                await self._data.wait()
            self._data = trio.Event()
            started = trio.current_time()
            await self.flush()
            if trio.current_time() - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                last_checkpoint = trio.current_time()
                await self.save_checkpoints()
            await trio.sleep_until(started + self.config.fsync_interval_s)

    async def flush(self) -> None:
        """Every buffered record to its segment file, fsync'd; on a full disk the feeds pause until it has room."""
        async with self._flushing:  # one flush at a time: two would write the same buffered bytes twice
            await self._flush()

    async def _flush(self) -> None:
        for feed_log in list(self.logs.values()):
            if not feed_log.buffer:
                continue
            data, first, last = bytes(feed_log.buffer), feed_log.buffered_first_seq, feed_log.buffered_last_seq
            last_at = feed_log.buffered_last_at
            try:
                await trio.to_thread.run_sync(self._write, feed_log, data, first, limiter=self._io)
            except _PartialWrite as partial:
                del feed_log.buffer[: partial.done]
                exc = partial.error
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    self._pause(f"the journal cannot write to {self.config.directory}: {exc.strerror or exc}")
                else:
                    self._pause(f"the journal's disk is full ({self.config.directory})")
                log.error("journal write failed; feeds paused, retrying", error=f"{type(exc).__name__}: {exc}")
                await trio.sleep(DISK_FULL_RETRY_S)
                self._data.set()
                return
            del feed_log.buffer[: len(data)]
            feed_log.buffered_first_seq = last + 1
            for segment in feed_log.segments:
                segment.readable = segment.size
            feed_log.written_seq = last
            feed_log.segments[-1].last_seq = last
            feed_log.segments[-1].last_at = last_at  # a write goes wholly to the last segment
            feed_log.notify()
        if self.paused is not None and not self.paused.startswith("the journal reached"):
            self._resume()
        self._update_stats()

    def _write(self, feed_log: FeedLog, data: bytes, first_seq: int) -> None:
        """In a worker thread: append ``data`` to the active segment (rolling a full one) and fdatasync.

        A failed write (disk full) raises ``_PartialWrite`` saying how far it got; the caller keeps the
        rest for the next attempt, which starts at the exact byte where this one stopped.
        """
        if feed_log.fd is None or (not feed_log.partial and feed_log.segments[-1].size >= self.segment_max_bytes):
            self._roll(feed_log, first_seq)
        segment = feed_log.segments[-1]
        assert feed_log.fd is not None
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(feed_log.fd, view[done:])
            os.fdatasync(feed_log.fd)
        except OSError as exc:
            segment.size += done
            feed_log.partial = feed_log.partial or done > 0
            raise _PartialWrite(done, exc) from exc
        segment.size += done
        feed_log.partial = False

    def _roll(self, feed_log: FeedLog, first_seq: int) -> None:
        """Open the segment to append to: the last one while it has room (after a restart), else a new one."""
        assert feed_log.directory is not None
        feed_log.directory.mkdir(parents=True, exist_ok=True)
        if feed_log.fd is not None:
            os.close(feed_log.fd)
            feed_log.fd = None
        if not feed_log.segments or feed_log.segments[-1].size >= self.segment_max_bytes:
            feed_log.segments.append(_Segment(first_seq, feed_log.directory / f"{first_seq:020d}{SEGMENT_SUFFIX}"))
        segment = feed_log.segments[-1]
        feed_log.fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        segment.size = os.fstat(feed_log.fd).st_size
        if segment.size == 0:
            _fsync_directory(feed_log.directory)

    async def save_checkpoints(self) -> None:
        for feed_log in list(self.logs.values()):
            mark = feed_log.watermark()
            if feed_log.directory is None or mark == feed_log.saved_checkpoint:
                continue
            try:
                await trio.to_thread.run_sync(self._save_checkpoint, feed_log, mark, limiter=self._io)
            except OSError as exc:  # a full disk: the old checkpoint stands, which only replays more
                log.warning("could not save a journal checkpoint", feed=feed_log.feed, error=str(exc))
        await self._cleanup()

    @staticmethod
    def _save_checkpoint(feed_log: FeedLog, mark: int) -> None:
        assert feed_log.directory is not None
        feed_log.directory.mkdir(parents=True, exist_ok=True)
        path = feed_log.directory / CHECKPOINT
        temporary = path.with_suffix(".tmp")
        at = feed_log.checkpoint_at
        temporary.write_bytes(orjson.dumps({"seq": mark, "at": format_at(at) if at else None}))
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        feed_log.saved_checkpoint = mark

    async def _cleanup(self) -> None:
        """Delete segments wholly before the saved checkpoint, once past ``retain_s`` and the warm-up window.

        At the budget, retention and the warm-up window give way (the budget is the promise; they are
        conveniences), and the active segment goes too once all it holds is committed: a single large write
        can make one segment most of the budget, and keeping it would keep the feeds paused for good.
        """
        now = self.clock()
        at_budget = self.paused is not None and self.paused.startswith("the journal reached")
        for feed_log in list(self.logs.values()):
            while feed_log.segments:
                segment = feed_log.segments[0]
                if segment.last_seq >= feed_log.saved_checkpoint or segment.last_seq < 0:
                    break
                active = len(feed_log.segments) == 1
                if active and not (at_budget and not feed_log.buffer and feed_log.written_seq == segment.last_seq):
                    break
                if not at_budget:
                    if segment.last_at is None:
                        segment.last_at = await trio.to_thread.run_sync(_last_at, segment, limiter=self._reads)
                    newest = segment.last_at
                    if newest is not None:
                        if newest + timedelta(seconds=self.config.retain_s) > now:
                            break
                        if feed_log.checkpoint_at is not None and (
                            newest >= feed_log.checkpoint_at - timedelta(seconds=self.config.warmup_s)
                        ):
                            break
                if active:
                    async with self._flushing:  # the next write opens a new segment
                        if feed_log.fd is not None:
                            os.close(feed_log.fd)
                            feed_log.fd = None
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
                self.total_bytes -= segment.size
                feed_log.segments.pop(0)
                if feed_log.read_at is not None and feed_log.read_at[0] == segment.path:
                    feed_log.read_at = None
        self._update_stats()
        if at_budget and self.total_bytes < self.config.max_bytes * RESUME_FRACTION:
            self._resume()

    def _update_stats(self) -> None:
        self.stats.journal_bytes = self.total_bytes

    async def wait_done(self) -> None:
        """Return once every frame appended so far has been read and committed."""
        while True:
            undone = next((feed_log for feed_log in self.logs.values() if not feed_log.done), None)
            if undone is None:
                return
            await undone.changed.wait()

    def undone_frames(self) -> int:
        return sum(feed_log.appended_seq - feed_log.watermark() + 1 for feed_log in self.logs.values())


class _PartialWrite(Exception):
    def __init__(self, done: int, error: OSError) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


@attrs.define
class JournalReader:
    """Reads one feed's log for its normalizer: from the memory tail while it keeps up, else from disk."""

    journal: Journal
    log: FeedLog
    ready: deque[Record | DamagedRecord] = attrs.Factory(deque)

    def __attrs_post_init__(self) -> None:
        self.ready.extend(self.log.recovered)
        self.log.recovered.clear()

    async def receive(self) -> Record | DamagedRecord:
        journal, feed_log = self.journal, self.log
        while True:
            if self.ready:
                return self.ready.popleft()
            tail = feed_log.tail
            while tail and tail[0].seq < feed_log.cursor:  # read from disk meanwhile
                feed_log.tail_bytes -= tail.popleft().nbytes
            if tail and tail[0].seq == feed_log.cursor and feed_log.warmup_from is None:
                record = tail.popleft()
                feed_log.tail_bytes -= record.nbytes
                feed_log.cursor = record.seq + 1
                feed_log.notify()  # a memory-only append may be waiting for room
                return record
            if journal.durable and (feed_log.cursor <= feed_log.appended_seq or feed_log.warmup_from is not None):
                if feed_log.written_seq < feed_log.cursor and feed_log.warmup_from is None:
                    # Caught up with the disk: appends go to the memory tail again from now on, so this
                    # reader waits for the flusher once (for the frames appended meanwhile), not per frame.
                    feed_log.memory_mode = journal._tail_has_room(feed_log)
                    journal._data.set()  # ask the flusher for it now
                    await feed_log.changed.wait()
                    continue
                self.ready.extend(await journal._read_disk(feed_log))
                continue
            if feed_log.cursor > feed_log.appended_seq:
                feed_log.memory_mode = True
            await feed_log.changed.wait()


def _last_at(segment: _Segment) -> datetime | None:
    items, _, _ = read_segment(segment.path, "")
    frames = [item[1] for item in items if not isinstance(item, DamagedRecord)]
    return frames[-1].received_at if frames else None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@asynccontextmanager
async def open_journal(
    config: JournalConfig, stats: PipelineStats, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Journal]:
    """Lock and load the journal and run its flusher; on exit write, fsync and checkpoint what it holds."""
    journal = Journal(config, stats) if clock is None else Journal(config, stats, clock)
    journal.open()
    try:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.serve_flush)
                try:
                    yield journal
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                if journal.durable:
                    await journal.flush()
                    await journal.save_checkpoints()
    finally:
        journal.close()
