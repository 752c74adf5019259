"""The disk spool: an append-only, fsync'd, checksummed queue of batches, one file per table.

A writer spools batches the database cannot take (an outage longer than the in-memory buffer, or a
shutdown while the database is down) and drains them, oldest first, once it answers again. Record
layout: 4-byte big-endian payload length, 4-byte CRC-32 of the payload, then the payload (JSON: a
sequence number and the rows). The consumed position lives in a small ``head`` file replaced
atomically after each drained batch; a crash between the database commit and that update replays
one batch, which the idempotent writes absorb. A torn or corrupt tail (a crash mid-append) is
detected by its length or checksum when the spool is opened, logged, and cut off: it never stops
the bridge. Calls block on disk; the application runs them in a worker thread.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import attrs
import cattrs
import orjson

from bridge.domain.models import ROW_CLASSES, RawJson, Row, Table
from bridge.logs import get_logger

log = get_logger(__name__, component="spool")
HEADER: Final = struct.Struct(">II")

_codec = cattrs.Converter()
_codec.register_unstructure_hook(Decimal, str)
_codec.register_structure_hook(Decimal, lambda value, _: Decimal(value))
_codec.register_unstructure_hook(UUID, str)
_codec.register_structure_hook(UUID, lambda value, _: UUID(value))
_codec.register_unstructure_hook(datetime, datetime.isoformat)
_codec.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
_codec.register_unstructure_hook(date, date.isoformat)
_codec.register_structure_hook(date, lambda value, _: date.fromisoformat(value))
for _raw in (dict[str, Any] | None, dict[str, Any] | RawJson | None):  # ``raw`` as it was (a str: RawJson)
    _codec.register_structure_hook(_raw, lambda value, _: value)


def encode_rows(rows: Sequence[Row]) -> list[Any]:
    """Each row as a JSON object tagged with its class (a table can hold more than one kind)."""
    return [{"_type": type(row).__name__, **_codec.unstructure(row)} for row in rows]


def decode_rows(table: Table, data: list[Any]) -> list[Row]:
    rows = []
    for item in data:
        kind = ROW_CLASSES[item.pop("_type")]
        rows.append(_codec.structure(item, kind))
    return rows


@attrs.define
class DiskSpool:
    """The spool of one table under ``directory``; not thread-safe (one writer task owns it)."""

    directory: Path
    table: Table
    records: int = 0
    bytes: int = 0
    torn_tails: int = 0
    _head: int = 0
    _positions: list[tuple[int, int, int]] = attrs.Factory(list)  # (offset, length, seq) of each unconsumed record

    @property
    def head_seq(self) -> int | None:
        return self._positions[0][2] if self._positions else None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.table}.spool"

    @property
    def head_path(self) -> Path:
        return self.directory / f"{self.table}.head"

    def open(self) -> DiskSpool:
        """Read the existing spool (after a restart), cutting off a torn tail."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._head = int(self.head_path.read_text() or 0) if self.head_path.exists() else 0
        self._positions = []
        if not self.path.exists():
            self.path.touch()
        with self.path.open("r+b") as file:
            size = file.seek(0, os.SEEK_END)
            offset = self._head if self._head <= size else 0
            file.seek(offset)
            while offset < size:
                header = file.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                length, checksum = HEADER.unpack(header)
                payload = file.read(length)
                if len(payload) < length or zlib.crc32(payload) != checksum:
                    break
                self._positions.append((offset, HEADER.size + length, int(orjson.loads(payload)["seq"])))
                offset += HEADER.size + length
            if offset < size:
                self.torn_tails += 1
                log.warning("spool tail was torn or corrupt and is cut off", table=str(self.table),
                            lost_bytes=size - offset)  # fmt: skip
                file.truncate(offset)
                os.fsync(file.fileno())
        self._recount()
        return self

    def append(self, seq: int, parts: Sequence[tuple[str, Sequence[Row]]]) -> None:
        """Add a batch (its parts: the feed each group of rows came from) and fsync it."""
        payload = orjson.dumps(
            {"seq": seq, "parts": [{"feed": feed, "rows": encode_rows(rows)} for feed, rows in parts]}
        )
        with self.path.open("ab") as file:
            offset = file.seek(0, os.SEEK_END)
            file.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            file.flush()
            os.fsync(file.fileno())
        self._positions.append((offset, HEADER.size + len(payload), seq))
        self._recount()

    def peek(self) -> tuple[int, list[tuple[str, list[Row]]]] | None:
        """The oldest batch (sequence number and parts), without consuming it."""
        if not self._positions:
            return None
        offset, length, _ = self._positions[0]
        with self.path.open("rb") as file:
            file.seek(offset + HEADER.size)
            record = orjson.loads(file.read(length - HEADER.size))
        parts = [(part["feed"], decode_rows(self.table, part["rows"])) for part in record["parts"]]
        return int(record["seq"]), parts

    def pop(self) -> None:
        """The oldest batch is in the database: move the head past it (and reset an emptied spool)."""
        offset, length, _ = self._positions.pop(0)
        if self._positions:
            self._write_head(offset + length)
        else:
            with self.path.open("r+b") as file:
                file.truncate(0)
                os.fsync(file.fileno())
            self._write_head(0)
        self._recount()

    def _write_head(self, position: int) -> None:
        temporary = self.head_path.with_suffix(".tmp")
        with temporary.open("w") as file:
            file.write(str(position))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.head_path)
        self._head = position

    def _recount(self) -> None:
        self.records = len(self._positions)
        self.bytes = sum(length for _, length, _ in self._positions)

    def __len__(self) -> int:
        return self.records
