"""In-memory implementations of the ports, for unit tests of the application layer.

The fake repository keeps the same row semantics as PostgreSQL where the application can observe
them (idempotent ids, latest-wins broker state, deletes on quantity zero) and can be told to fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import attrs

from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    DeadLetter,
    FeedGapRow,
    NewsEventRow,
    OptionsFlowRow,
    Row,
    Table,
)
from bridge.domain.ports import DataRejected, Staged


@attrs.define
class MemoryRepository:
    options_flow: dict[object, OptionsFlowRow] = attrs.Factory(dict)
    news_events: dict[object, NewsEventRow] = attrs.Factory(dict)
    accounts: dict[AccountRef, BrokerAccountRow] = attrs.Factory(dict)
    positions: dict[tuple[AccountRef, str], BrokerPositionRow] = attrs.Factory(dict)
    balances: dict[AccountRef, BrokerBalanceRow] = attrs.Factory(dict)
    dead_letters: dict[object, DeadLetter] = attrs.Factory(dict)
    feed_gaps: dict[object, FeedGapRow] = attrs.Factory(dict)
    snapshots: dict[AccountRef, datetime] = attrs.Factory(dict)
    #: Every call to ``write``, in order: (table, number of rows).
    calls: list[tuple[Table, int]] = attrs.Factory(list)
    #: Called before each write; raise from it to simulate an outage or a rejection.
    fail: Callable[[Table, Sequence[Row]], None] | None = None
    #: Called when rows are staged; raise ``DataRejected`` from it to simulate rows that cannot be encoded.
    refuse_stage: Callable[[Table, Sequence[Row]], None] | None = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def store(self, table: Table) -> MemoryTableStore:
        return MemoryTableStore(self, table)

    def write(self, table: Table, rows: Sequence[Row]) -> int:
        with self._lock:
            if self.fail is not None:
                self.fail(table, rows)
            self.calls.append((table, len(rows)))
            return sum(self._apply(row) for row in rows)

    def ping(self) -> None:
        if self.fail is not None:
            self.fail(Table.DEAD_LETTERS, [])

    def count_rows(self) -> Mapping[Table, int]:
        return {
            Table.OPTIONS_FLOW: len(self.options_flow),
            Table.NEWS_EVENTS: len(self.news_events),
            Table.BROKER_ACCOUNTS: len(self.accounts),
            Table.BROKER_POSITIONS: len(self.positions),
            Table.BROKER_BALANCES: len(self.balances),
            Table.DEAD_LETTERS: len(self.dead_letters),
            Table.FEED_GAPS: len(self.feed_gaps),
        }

    def _apply(self, row: Row) -> int:
        match row:
            case OptionsFlowRow():
                return int(self.options_flow.setdefault(row.id, row) is row)
            case NewsEventRow():
                existing = self.news_events.get(row.id)
                if row.removal and existing is not None:
                    self.news_events[row.id] = attrs.evolve(existing, raw=row.raw)
                else:
                    self.news_events[row.id] = row
                return 1
            case BrokerAccountRow():
                known = self.accounts.get(row.account)
                if known is None or row.label is not None:
                    self.accounts[row.account] = row
                return 1
            case BrokerPositionRow():
                self._ensure_account(row.account)
                if row.account in self.snapshots and row.updated_at < self.snapshots[row.account]:
                    return 0  # older than the account's last full snapshot
                position = (row.account, row.symbol)
                if not _newer_or_same(row.updated_at, self.positions.get(position)):
                    return 0
                if row.closes_position:
                    return int(self.positions.pop(position, None) is not None)
                self.positions[position] = row
                return 1
            case BrokerPositionsSnapshot():
                self._ensure_account(row.account)
                if row.account in self.snapshots and self.snapshots[row.account] >= row.as_of:
                    return 0
                self.snapshots[row.account] = row.as_of
                gone = [
                    key
                    for key, position in self.positions.items()
                    if key[0] == row.account and key[1] not in row.symbols and position.updated_at <= row.as_of
                ]
                for key in gone:
                    del self.positions[key]
                return len(gone)
            case BrokerBalanceRow():
                self._ensure_account(row.account)
                if not _newer_or_same(row.updated_at, self.balances.get(row.account)):
                    return 0
                self.balances[row.account] = row
                return 1
            case DeadLetter():
                return int(self.dead_letters.setdefault(row.id, row) is row)
            case FeedGapRow():
                seen = self.feed_gaps.get(row.id)
                self.feed_gaps[row.id] = row if seen is None else attrs.evolve(
                    seen,
                    ended_at=seen.ended_at or row.ended_at,
                    backfill_status=row.backfill_status or seen.backfill_status,
                    backfill_rows=row.backfill_rows if row.backfill_rows is not None else seen.backfill_rows,
                    backfill_detail=row.backfill_detail or seen.backfill_detail,
                )
                return 1
        raise DataRejected(f"unsupported row {row!r}")

    def _ensure_account(self, account: AccountRef) -> None:
        self.accounts.setdefault(account, BrokerAccountRow(account=account))


def _newer_or_same(updated_at: datetime, current: BrokerPositionRow | BrokerBalanceRow | None) -> bool:
    return current is None or current.updated_at <= updated_at


@attrs.frozen
class MemoryTableStore:
    """The ``TableStore`` of one table of a ``MemoryRepository``; ``stage`` refuses what ``refuse`` says."""

    repository: MemoryRepository
    table: Table

    def stage(self, rows: Sequence[Row]) -> Staged:
        if self.repository.refuse_stage is not None:
            self.repository.refuse_stage(self.table, rows)
        return Staged(rows, None, 100 * len(rows))

    def commit(self, batch: Sequence[Staged]) -> int:
        return self.repository.write(self.table, [row for staged in batch for row in staged.rows])
