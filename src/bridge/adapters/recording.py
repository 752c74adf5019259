"""Recordings: JSON Lines of ``{"at": ..., "feed": ..., "frame": ...}``, one inbound message a line.

``at`` is the receive time in UTC with microseconds and a ``Z``; ``frame`` is the message's exact
text. A recording may mix feeds. The replay feed reads them back through the same pipeline.

Journal segments hold the same entries, each behind its CRC-32 and with its sequence number
(``<crc> {"seq": …, "at": …, "feed": …, "frame": …}``): ``read_recording`` reads both, so
``bridge replay`` takes journal segments as they are.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import attrs
import orjson

from bridge.domain.models import ReceivedFrame


class InvalidRecordingLine(ValueError):
    pass


def format_at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_entry(frame: ReceivedFrame) -> bytes:
    return orjson.dumps({"at": format_at(frame.received_at), "feed": frame.feed, "frame": frame.text}) + b"\n"


def decode_entry(line: bytes | str) -> ReceivedFrame:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecordingLine(f"not JSON ({exc})") from None
    return _entry_frame(entry)


def encode_record(seq: int, frame: ReceivedFrame) -> bytes:
    """A journal record: the recording entry plus ``seq``, behind the CRC-32 of its JSON."""
    body = orjson.dumps({"seq": seq, "at": format_at(frame.received_at), "feed": frame.feed, "frame": frame.text})
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def is_journal_line(line: bytes) -> bool:
    head = line[:9]
    return len(head) == 9 and head[8:9] == b" " and all(c in b"0123456789abcdef" for c in head[:8])


def decode_record(line: bytes) -> tuple[int, ReceivedFrame]:
    """One journal line (without its newline) into (seq, frame); ``InvalidRecordingLine`` when damaged."""
    if not is_journal_line(line):
        raise InvalidRecordingLine("not a journal record (no checksum)")
    body = line[9:]
    if zlib.crc32(body) != int(line[:8], 16):
        raise InvalidRecordingLine("checksum mismatch")
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecordingLine(f"not JSON ({exc})") from None
    frame = _entry_frame(entry)
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidRecordingLine("'seq' must be an integer")
    return seq, frame


def _entry_frame(entry: object) -> ReceivedFrame:
    if not isinstance(entry, dict):
        raise InvalidRecordingLine("not a JSON object")
    at, feed, text = entry.get("at"), entry.get("feed"), entry.get("frame")
    if not isinstance(feed, str) or not feed:
        raise InvalidRecordingLine("'feed' must be a non-empty string")
    if not isinstance(text, str):
        raise InvalidRecordingLine("'frame' must be a string (the message's exact text)")
    if not isinstance(at, str):
        raise InvalidRecordingLine("'at' must be an ISO-8601 timestamp string")
    try:
        received_at = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidRecordingLine(f"'at' is not an ISO-8601 timestamp: {at!r}") from None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return ReceivedFrame(feed=feed, received_at=received_at, text=text)


@attrs.define
class RecordingWriter:
    """Appends frames to a recording; line-buffered writes so a crash loses at most a torn last line."""

    path: Path
    frames: int = 0
    _file: IO[bytes] | None = attrs.field(default=None, init=False)

    def __enter__(self) -> RecordingWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=io.DEFAULT_BUFFER_SIZE)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __call__(self, frame: ReceivedFrame) -> None:
        assert self._file is not None, "use RecordingWriter as a context manager"
        self._file.write(encode_entry(frame))
        self.frames += 1
        if self.frames % 256 == 0:
            self._file.flush()


def read_recording(path: Path) -> Iterator[tuple[int, ReceivedFrame | InvalidRecordingLine]]:
    """Yield (line number, frame or the problem with that line); blank lines are skipped."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield number, decode_record(line.rstrip(b"\r\n"))[1] if is_journal_line(line) else decode_entry(line)
            except InvalidRecordingLine as exc:
                yield number, exc
