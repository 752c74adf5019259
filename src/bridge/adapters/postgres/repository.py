"""The PostgreSQL repository: one transaction per batch, idempotent row semantics per table.

Sync psycopg 3 with a ``ConnectionPool``: the application calls ``write`` from worker threads (one
per table writer). ``options_flow``, the hot table, is COPYed straight into the table; a batch
holding an id that is already stored (a replay, an overlap after a reconnect) is rolled back to a
savepoint and COPYed into a per-connection temporary staging table instead, then inserted from
there with ``on conflict (id) do nothing``. The other tables are small and go in one
``insert … select from unnest(…)`` statement each. ``use_copy=False`` sends ``options_flow``
through ``unnest`` as well (for poolers that refuse COPY).

Measured for one 5000-row ``options_flow`` batch (2 cores, embedded PostgreSQL 16 on a unix socket,
median of 26 batches): COPY into the staging table then ``insert … select`` 52 ms (~96k rows/s);
``insert … select from unnest(…)`` 167 ms (~30k rows/s), most of it spent adapting the arrays in
Python. Binary COPY (``set_types``) measured no faster than text COPY, so text is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Final, Literal, TypeVar
from uuid import UUID

import attrs
import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.adapters.postgres.conninfo import DatabaseUnreachable, describe_connection_error
from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    DeadLetter,
    FeedGapRow,
    JsonObject,
    NewsEventRow,
    OptionsFlowRow,
    RawJson,
    Row,
    Table,
)
from bridge.domain.ports import DataRejected, Staged, TransientWriteError
from bridge.logs import get_logger

log = get_logger(__name__, component="postgres")
Cursor = psycopg.Cursor[Any]
R = TypeVar("R", bound=Row)

OPTIONS_FLOW_COLUMNS: Final = (
    "id", "received_at", "event_ts", "symbol", "option_symbol", "side", "size", "notional", "strike",
    "expiration", "option_type", "trade_price", "bid", "ask", "venue", "source", "raw",
)  # fmt: skip
_OPTIONS_FLOW_TYPES: Final = (
    "uuid", "timestamptz", "timestamptz", "text", "text", "text", "numeric", "numeric", "numeric",
    "date", "text", "numeric", "numeric", "numeric", "text", "text", "jsonb",
)  # fmt: skip
_NEWS_COLUMNS: Final = (
    "id", "received_at", "event_ts", "source", "symbol", "headline", "body", "url", "category", "sentiment",
    "importance", "raw",
)  # fmt: skip
_NEWS_TYPES: Final = (
    "uuid", "timestamptz", "timestamptz", "text", "text", "text", "text", "text", "text", "text", "int4", "jsonb",
)  # fmt: skip
_NEWS_CONTENT: Final = ("event_ts", "symbol", "headline", "body", "url", "category", "sentiment", "importance", "raw")
"""What a later version of an article replaces (never its id nor when the bridge first received it)."""
_NEWS_LIST: Final = ", ".join(_NEWS_COLUMNS)
STAGE: Final = "bridge_stage_options_flow"
_STAGE_DDL: Final = (
    f"create temp table if not exists {STAGE} (like public.options_flow including defaults) on commit delete rows"
)
_STAGE_PER_TRANSACTION_DDL: Final = (
    f"create temp table if not exists {STAGE} (like public.options_flow including defaults) on commit drop"
)
_COLUMN_LIST: Final = ", ".join(OPTIONS_FLOW_COLUMNS)
_COPY_COLUMNS: Final = (
    "id", "received_at", "event_ts", "size", "notional", "strike", "expiration", "trade_price", "bid", "ask",
    "symbol", "option_symbol", "source", "venue", "side", "option_type", "raw",
)  # fmt: skip
"""The COPY payload's column order: the free-text columns together, so they are checked for escapes at once."""
_COPY_LIST: Final = ", ".join(_COPY_COLUMNS)
# Content the database refuses: data exceptions (22), integrity violations (23), over-size values (54).
_CONTENT_ERRORS: Final = (pg_errors.DataError, pg_errors.IntegrityError, pg_errors.ProgramLimitExceeded)
# A schema that is not there (yet): `bridge migrate` has not run, or a deploy is half done. Retried.
_SCHEMA_ERRORS: Final = (
    pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.UndefinedFunction, pg_errors.UndefinedObject,
    pg_errors.InsufficientPrivilege,
)  # fmt: skip
# The database could not take the batch now: connection lost or refused, timeouts (statement_timeout is
# QueryCanceled), admin shutdown, serialization failures and deadlocks (all OperationalError), a pool
# with no free connection in time, a socket error.
_TRANSIENT_ERRORS: Final = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError)
_GAP_TYPES: Final = ("uuid", "text", "timestamptz", "timestamptz", "text", "text", "text", "int4", "text")
RECONNECT_FOREVER_S: Final = 10 * 365 * 24 * 3600.0
STATEMENT_TIMEOUT_MS: Final = 60_000
"""No statement of a batch may run longer: a hung database becomes a retried batch, not a stuck writer."""


def _json(value: JsonObject | RawJson | None) -> str | None:
    """JSON text for a ``jsonb`` column (a ``RawJson`` is text already)."""
    return value if value is None or type(value) is str else orjson.dumps(value).decode()


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%s::{kind}[]" for kind in types) + ")"


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Row tuples to per-column lists, the shape ``unnest`` takes."""
    return [[row[index] for row in rows] for index in range(width)]


def _latest(rows: Sequence[R], key: Callable[[R], object], stamp: Callable[[R], object]) -> list[R]:
    """One row per key: the newest by ``stamp``, the later one on a tie (a batch is in arrival order)."""
    chosen: dict[object, R] = {}
    for row in rows:
        current = chosen.get(key(row))
        if current is None or stamp(current) <= stamp(row):  # type: ignore[operator]
            chosen[key(row)] = row
    return list(chosen.values())


def _latest_news(rows: Sequence[NewsEventRow]) -> list[NewsEventRow]:
    """One row per article id and per (source, event_ts, headline), the later one winning.

    Two rows with one key in a single ``insert … on conflict do update`` are an error, not a
    last-wins; articles without a time never conflict on that key, so they are only deduplicated by id.
    """
    by_id: dict[UUID, NewsEventRow] = {}
    for row in rows:
        by_id.pop(row.id, None)  # re-inserted last: the dict keeps the order in which the winners arrived
        by_id[row.id] = row
    by_key: dict[object, NewsEventRow] = {}
    for row in by_id.values():
        key = row.natural_key if row.event_ts is not None else row.id
        by_key.pop(key, None)
        by_key[key] = row
    return list(by_key.values())


def _options_flow_tuple(row: OptionsFlowRow) -> tuple[object, ...]:
    return (
        row.id, row.received_at, row.event_ts, row.symbol, row.option_symbol, row.side, row.size,
        row.notional, row.strike, row.expiration, row.option_type, row.trade_price, row.bid, row.ask,
        row.venue, row.source, _json(row.raw),
    )  # fmt: skip


_NULL: Final = "\\N"


def _copy_text(value: str) -> str:
    """A text value escaped for COPY's text format (the check is the common, nothing-to-escape case)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _options_flow_copy_data(rows: Sequence[OptionsFlowRow]) -> bytes:
    """The batch as one COPY text-format payload, in ``_COPY_COLUMNS`` order.

    Formatted here rather than by ``Copy.write_row``: psycopg's per-value dumpers took half of the
    writer's time, while ``isoformat``, ``str`` and one ``orjson.dumps`` per row are C calls, and a
    value shared by consecutive rows (a frame's ``received_at``, an ``event_ts``) or by many
    (a contract's expiration) is formatted once. The free-text columns come together, so one scan
    of them finds whether any needs escaping (the rare case); JSON text never holds a raw tab or
    newline (they are escaped), so only its backslashes need doubling.
    """
    lines: list[str] = []
    append = lines.append
    last_received: datetime | None = None
    last_event: datetime | None = None
    received = event = ""
    dates: dict[date, str] = {}
    null = _NULL
    for row in rows:
        if row.received_at is not last_received:
            last_received, received = row.received_at, row.received_at.isoformat()
        if row.event_ts is not last_event:  # a normalizer may share one datetime between trades
            last_event, event = row.event_ts, row.event_ts.isoformat()
        expiration, notional, strike, price, bid, ask, option_type, venue, raw = (
            row.expiration, row.notional, row.strike, row.trade_price, row.bid, row.ask, row.option_type, row.venue,
            row.raw,
        )  # fmt: skip
        if expiration is None:
            expiration_text = null
        elif (expiration_text := dates.get(expiration)) is None:  # type: ignore[assignment]
            expiration_text = dates[expiration] = expiration.isoformat()
        # the free-text columns, checked at once; ``side`` and ``option_type`` are literals of the domain
        symbol, option_symbol, source = row.symbol, row.option_symbol, row.source
        free = (symbol, option_symbol, source) if venue is None else (symbol, option_symbol, source, venue)
        texts = "\t".join(free)
        if "\\" in texts or "\n" in texts or "\r" in texts or texts.count("\t") != len(free) - 1:
            texts = "\t".join(map(_copy_text, free))
        append("\t".join((
            row.id.hex, received, event, str(row.size),
            null if notional is None else str(notional), null if strike is None else str(strike), expiration_text,
            null if price is None else str(price), null if bid is None else str(bid), null if ask is None else str(ask),
            texts if venue is not None else texts + "\t\\N", row.side, null if option_type is None else option_type,
            null if raw is None else _json(raw).replace("\\", "\\\\"),  # type: ignore[union-attr]
        )))  # fmt: skip
    append("")
    return "\n".join(lines).encode()


class PostgresRepository:
    """Implements ``bridge.domain.ports.Repository`` on a psycopg connection pool."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        *,
        use_copy: bool = True,
        stage_per_transaction: bool = False,
        statement_timeout_ms: int | None = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self.pool = pool
        self.use_copy = use_copy
        self.direct_copies = 0
        """``options_flow`` batches COPYed straight into the table."""
        self.staged_copies = 0
        """``options_flow`` batches that met an existing id and went through the staging table."""
        self.stage_per_transaction = stage_per_transaction
        self.statement_timeout_ms = statement_timeout_ms
        """Behind a transaction pooler a session's temp table may be on another server connection
        next time: create the staging table inside each transaction (``on commit drop``) instead."""
        self._account_ids: dict[AccountRef, UUID] = {}
        self._account_lock = threading.Lock()
        self._stores = {table: PostgresTableStore(self, table) for table in Table}
        self._writers: Mapping[Table, Callable[[Cursor, Sequence[Any]], tuple[int, dict[AccountRef, UUID]]]] = {
            Table.NEWS_EVENTS: self._write_news,
            Table.BROKER_ACCOUNTS: self._write_accounts,
            Table.BROKER_POSITIONS: self._write_positions,
            Table.BROKER_BALANCES: self._write_balances,
            Table.DEAD_LETTERS: self._write_dead_letters,
            Table.FEED_GAPS: self._write_feed_gaps,
        }

    def store(self, table: Table) -> PostgresTableStore:
        return self._stores[table]

    def write(self, table: Table, rows: Sequence[Row]) -> int:
        """Stage and commit ``rows`` of one table at once (tools and tests; the pipeline uses ``store``)."""
        store = self._stores[table]
        return store.commit([store.stage(rows)])

    def commit(self, table: Table, rows: Sequence[Row], payload: bytes | None) -> int:
        """Write one batch of one table in one transaction, raising only the port's two error kinds.

        Two refusals may be transient and get one more attempt before they count as content errors:
        a foreign key violation (an account we cached was deleted behind our back: the cache is
        cleared) and a unique violation (another replica inserted the same article between our
        check and our insert: the retry sees its row and updates it).
        """
        if not rows:
            return 0
        try:
            try:
                return self._write_once(table, rows, payload)
            except pg_errors.ForeignKeyViolation:
                with self._account_lock:
                    self._account_ids.clear()
                return self._write_once(table, rows, payload)
            except pg_errors.UniqueViolation:
                return self._write_once(table, rows, payload)
        except _CONTENT_ERRORS as exc:
            raise DataRejected(_first_line(exc)) from None
        except _SCHEMA_ERRORS as exc:
            raise TransientWriteError(
                f"the database schema is not what this bridge needs ({_first_line(exc)}); run `bridge migrate`"
            ) from None
        except _TRANSIENT_ERRORS as exc:
            raise TransientWriteError(f"{type(exc).__name__}: {_first_line(exc)}") from None

    def _write_once(self, table: Table, rows: Sequence[Row], payload: bytes | None) -> int:
        with self.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
            if self.statement_timeout_ms is not None:  # per transaction: also right behind a transaction pooler
                cursor.execute(f"set local statement_timeout = {int(self.statement_timeout_ms)}")
            new_accounts: dict[AccountRef, UUID] = {}
            if table is Table.OPTIONS_FLOW:
                written = self._write_options_flow(cursor, rows, payload)  # type: ignore[arg-type]
            else:
                written, new_accounts = self._writers[table](cursor, rows)
        if new_accounts:  # only after the commit, so a rolled-back account is never cached
            with self._account_lock:
                self._account_ids.update(new_accounts)
        return written

    def ping(self) -> None:
        with self.pool.connection(timeout=2) as connection:
            connection.execute("select 1")

    def count_rows(self) -> dict[Table, int]:
        query = " union all ".join(f"select '{table}', count(*) from public.{table}" for table in Table)
        with self.pool.connection() as connection:
            return {Table(name): count for name, count in connection.execute(query).fetchall()}

    # -- options_flow ------------------------------------------------------------------------------

    def _write_options_flow(self, cursor: Cursor, rows: Sequence[OptionsFlowRow], data: bytes | None) -> int:
        """COPY ``data`` (the rows' COPY payload) straight into the table; if any id is already there
        (a replay, an overlap after a reconnect, another replica), that attempt is rolled back to a
        savepoint and the batch goes through the staging table with ``on conflict do nothing``. The
        direct COPY is the common case and costs the database about half of the staged path
        (measured in ``bench/``). Without ``data`` (``use_copy=False``): one ``unnest`` insert."""
        if data is not None:
            try:
                with (
                    cursor.connection.transaction(),
                    cursor.copy(f"copy public.options_flow ({_COPY_LIST}) from stdin") as copy,
                ):
                    copy.write(data)
                self.direct_copies += 1
                return len(rows)
            except pg_errors.UniqueViolation:
                self.staged_copies += 1
            if self.stage_per_transaction:
                cursor.execute(_STAGE_PER_TRANSACTION_DDL)
            with cursor.copy(f"copy {STAGE} ({_COPY_LIST}) from stdin") as copy:
                copy.write(data)
            cursor.execute(
                f"insert into public.options_flow ({_COLUMN_LIST}) select {_COLUMN_LIST} from {STAGE}"
                " on conflict (id) do nothing"
            )
        else:
            values = [_options_flow_tuple(row) for row in rows]
            cursor.execute(
                f"insert into public.options_flow ({_COLUMN_LIST}) select * from {_unnest(_OPTIONS_FLOW_TYPES)}"
                " on conflict (id) do nothing",
                _columns(values, len(OPTIONS_FLOW_COLUMNS)),
            )
        return cursor.rowcount

    # -- news_events ---------------------------------------------------------------------------------

    def _write_news(self, cursor: Cursor, rows: Sequence[NewsEventRow]) -> tuple[int, dict[AccountRef, UUID]]:
        """Articles are matched by id first (a vendor's article id survives a headline change), then by
        the table's unique key (source, event_ts, headline); a removal only replaces ``raw`` of a row
        that exists, and is inserted as the article's only record otherwise.

        Two statements, not one: the insert's ``on conflict`` must see the rows the id-matched updates
        just changed (in one statement it would see the old ones and could hit a row twice).
        """
        latest = _latest_news(rows)
        values = [
            (*(_json(row.raw) if column == "raw" else getattr(row, column) for column in _NEWS_COLUMNS), row.removal)
            for row in latest
        ]
        incoming = f"select * from {_unnest([*_NEWS_TYPES, 'bool'])} as i({_NEWS_LIST}, removal)"
        changed = " or ".join(f"n.{column} is distinct from i.{column}" for column in _NEWS_CONTENT)
        cursor.execute(
            f"with incoming as ({incoming}),"
            " by_id as ("
            f"  update public.news_events n set {', '.join(f'{c} = i.{c}' for c in _NEWS_CONTENT)}"
            f"  from incoming i where n.id = i.id and not i.removal and ({changed}) returning 1),"
            " removed as ("
            "  update public.news_events n set raw = i.raw from incoming i"
            "  where n.id = i.id and i.removal and n.raw is distinct from i.raw returning 1)"
            " select (select count(*) from by_id) + (select count(*) from removed)",
            _columns(values, len(_NEWS_TYPES) + 1),
        )
        (updated,) = cursor.fetchone() or (0,)
        on_key = [column for column in _NEWS_CONTENT if column != "event_ts"]  # event_ts is part of the key
        cursor.execute(
            f"insert into public.news_events ({_NEWS_LIST})"
            f" select {', '.join('i.' + c for c in _NEWS_COLUMNS)} from ({incoming}) i"
            " where not exists (select 1 from public.news_events n where n.id = i.id)"
            " on conflict on constraint news_events_source_event_ts_headline_key"
            f" do update set {', '.join(f'{c} = excluded.{c}' for c in on_key)}"
            f" where {' or '.join(f'news_events.{c} is distinct from excluded.{c}' for c in on_key)}",
            _columns(values, len(_NEWS_TYPES) + 1),
        )
        return int(updated) + cursor.rowcount, {}

    # -- broker accounts, positions, balances --------------------------------------------------------

    def _resolve_accounts(
        self, cursor: Cursor, accounts: set[AccountRef]
    ) -> tuple[dict[AccountRef, UUID], dict[AccountRef, UUID]]:
        """Ids for ``accounts`` (all of them) and the ones this call had to look up (to cache on commit)."""
        with self._account_lock:
            known = {account: self._account_ids[account] for account in accounts if account in self._account_ids}
        missing = sorted(accounts - known.keys(), key=lambda a: (a.broker, a.external_account_id))
        if not missing:
            return known, {}
        brokers = [account.broker for account in missing]
        externals = [account.external_account_id for account in missing]
        cursor.execute(
            "insert into public.broker_accounts (broker, external_account_id)"
            " select * from unnest(%s::text[], %s::text[]) on conflict do nothing",
            [brokers, externals],
        )
        cursor.execute(
            "select a.broker, a.external_account_id, a.id from public.broker_accounts a"
            " join unnest(%s::text[], %s::text[]) as m(broker, external_account_id)"
            " using (broker, external_account_id)",
            [brokers, externals],
        )
        found = {AccountRef(broker, external): account_id for broker, external, account_id in cursor.fetchall()}
        return {**known, **found}, found

    def _write_accounts(self, cursor: Cursor, rows: Sequence[BrokerAccountRow]) -> tuple[int, dict[AccountRef, UUID]]:
        labelled: dict[AccountRef, str | None] = {}
        for row in rows:
            if row.label is not None or row.account not in labelled:
                labelled[row.account] = row.label
        accounts = list(labelled)
        cursor.execute(
            "insert into public.broker_accounts (broker, external_account_id, label)"
            " select * from unnest(%s::text[], %s::text[], %s::text[])"
            " on conflict (broker, external_account_id) do update set label = excluded.label"
            " where excluded.label is not null and excluded.label is distinct from broker_accounts.label"
            " returning broker, external_account_id, id",
            [
                [a.broker for a in accounts],
                [a.external_account_id for a in accounts],
                list(labelled.values()),
            ],
        )
        written = cursor.rowcount
        _, found = self._resolve_accounts(cursor, set(accounts))
        return written, found

    def _write_positions(
        self, cursor: Cursor, rows: Sequence[BrokerPositionRow | BrokerPositionsSnapshot]
    ) -> tuple[int, dict[AccountRef, UUID]]:
        """Snapshots first move each account's watermark (the newest snapshot applied); a position update
        older than its account's watermark is dropped, and only a snapshot that moved the watermark deletes
        the positions it no longer lists, so late or replayed data never resurrects a closed position."""
        ids, found = self._resolve_accounts(cursor, {row.account for row in rows})
        newest: dict[AccountRef, BrokerPositionsSnapshot] = {}
        for row in rows:
            if isinstance(row, BrokerPositionsSnapshot) and (
                row.account not in newest or newest[row.account].as_of <= row.as_of
            ):
                newest[row.account] = row
        applied: set[UUID] = set()
        if newest:
            cursor.execute(
                "insert into public.bridge_position_snapshots (broker_account_id, as_of)"
                " select * from unnest(%s::uuid[], %s::timestamptz[]) on conflict (broker_account_id)"
                " do update set as_of = excluded.as_of where bridge_position_snapshots.as_of < excluded.as_of"
                " returning broker_account_id",
                [[ids[s.account] for s in newest.values()], [s.as_of for s in newest.values()]],
            )
            applied = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "select broker_account_id, as_of from public.bridge_position_snapshots where broker_account_id = any(%s)",
            [list({ids[row.account] for row in rows})],
        )
        watermarks = dict(cursor.fetchall())
        positions = [
            row
            for row in rows
            if isinstance(row, BrokerPositionRow)
            and (ids[row.account] not in watermarks or row.updated_at >= watermarks[ids[row.account]])
        ]
        written = self._upsert_positions(cursor, positions, ids)
        for snapshot in newest.values():  # after the upserts: a snapshot's own positions are in the same batch
            if ids[snapshot.account] not in applied:
                continue  # older than a snapshot already applied
            cursor.execute(
                "delete from public.broker_positions where broker_account_id = %s and updated_at <= %s"
                " and not (symbol = any(%s::text[]))",
                [ids[snapshot.account], snapshot.as_of, list(snapshot.symbols)],
            )
            written += cursor.rowcount
        return written, found

    def _upsert_positions(
        self, cursor: Cursor, rows: Sequence[BrokerPositionRow], ids: Mapping[AccountRef, UUID]
    ) -> int:
        latest = _latest(rows, key=lambda row: (row.account, row.symbol), stamp=lambda row: row.updated_at)
        kept = [row for row in latest if not row.closes_position]
        closed = [row for row in latest if row.closes_position]
        written = 0
        if kept:
            values = [(ids[r.account], r.symbol, r.qty, r.avg_price, r.market_value, r.updated_at, _json(r.raw))
                      for r in kept]  # fmt: skip
            cursor.execute(
                "insert into public.broker_positions"
                " (broker_account_id, symbol, qty, avg_price, market_value, updated_at, raw)"
                f" select * from {_unnest(['uuid', 'text', 'numeric', 'numeric', 'numeric', 'timestamptz', 'jsonb'])}"
                " on conflict (broker_account_id, symbol) do update set qty = excluded.qty,"
                " avg_price = excluded.avg_price, market_value = excluded.market_value,"
                " updated_at = excluded.updated_at, raw = excluded.raw"
                " where broker_positions.updated_at <= excluded.updated_at",
                _columns(values, 7),
            )
            written += cursor.rowcount
        if closed:
            cursor.execute(
                "delete from public.broker_positions p"
                " using unnest(%s::uuid[], %s::text[], %s::timestamptz[]) as d(account_id, symbol, updated_at)"
                " where p.broker_account_id = d.account_id and p.symbol = d.symbol and p.updated_at <= d.updated_at",
                [
                    [ids[r.account] for r in closed],
                    [r.symbol for r in closed],
                    [r.updated_at for r in closed],
                ],
            )
            written += cursor.rowcount
        return written

    def _write_balances(self, cursor: Cursor, rows: Sequence[BrokerBalanceRow]) -> tuple[int, dict[AccountRef, UUID]]:
        ids, found = self._resolve_accounts(cursor, {row.account for row in rows})
        latest = _latest(rows, key=lambda row: row.account, stamp=lambda row: row.updated_at)
        values = [(ids[r.account], r.cash, r.buying_power, r.maintenance_margin, r.equity, r.updated_at, _json(r.raw))
                  for r in latest]  # fmt: skip
        cursor.execute(
            "insert into public.broker_balances"
            " (broker_account_id, cash, buying_power, maintenance_margin, equity, updated_at, raw)"
            f" select * from {_unnest(['uuid', 'numeric', 'numeric', 'numeric', 'numeric', 'timestamptz', 'jsonb'])}"
            " on conflict (broker_account_id) do update set cash = excluded.cash,"
            " buying_power = excluded.buying_power, maintenance_margin = excluded.maintenance_margin,"
            " equity = excluded.equity, updated_at = excluded.updated_at, raw = excluded.raw"
            " where broker_balances.updated_at <= excluded.updated_at",
            _columns(values, 7),
        )
        return cursor.rowcount, found

    # -- the gap ledger ----------------------------------------------------------------------------

    def _write_feed_gaps(self, cursor: Cursor, rows: Sequence[FeedGapRow]) -> tuple[int, dict[AccountRef, UUID]]:
        merged = _merge_gaps(rows)
        values = [(r.id, r.feed, r.started_at, r.ended_at, r.reason, r.instance_id, r.backfill_status,
                   r.backfill_rows, r.backfill_detail) for r in merged]  # fmt: skip
        cursor.execute(
            "insert into public.bridge_feed_gaps as g (id, feed, started_at, ended_at, reason, instance_id,"
            " backfill_status, backfill_rows, backfill_detail)"
            f" select * from {_unnest(_GAP_TYPES)}"
            " on conflict (id) do update set ended_at = coalesce(g.ended_at, excluded.ended_at),"
            " instance_id = coalesce(g.instance_id, excluded.instance_id),"
            " backfill_status = coalesce(excluded.backfill_status, g.backfill_status),"
            " backfill_rows = coalesce(excluded.backfill_rows, g.backfill_rows),"
            " backfill_detail = coalesce(excluded.backfill_detail, g.backfill_detail)",
            _columns(values, 9),
        )
        return cursor.rowcount, {}

    # -- dead letters ----------------------------------------------------------------------------------

    def _write_dead_letters(self, cursor: Cursor, rows: Sequence[DeadLetter]) -> tuple[int, dict[AccountRef, UUID]]:
        values = [(r.id, r.feed, r.received_at, r.reason, r.frame, r.frame_length, r.frame_sha256) for r in rows]
        cursor.execute(
            "insert into public.bridge_dead_letters (id, feed, received_at, reason, frame, frame_length, frame_sha256)"
            f" select * from {_unnest(['uuid', 'text', 'timestamptz', 'text', 'text', 'int8', 'text'])}"
            " on conflict (id) do nothing",
            _columns(values, 7),
        )
        return cursor.rowcount, {}


@attrs.frozen
class PostgresTableStore:
    """The ``TableStore`` of one table: stages rows on the event loop, commits them in a worker thread.

    ``options_flow`` is staged as its COPY payload (encoded right after normalization, while the rows are
    in the CPU's caches); the other tables are staged as their rows, after checking that every ``raw``
    can be encoded, so that a row JSON cannot hold is refused here, alone, and not in a batch.
    """

    repository: PostgresRepository
    table: Table

    def stage(self, rows: Sequence[Row]) -> Staged:
        try:
            if self.table is Table.OPTIONS_FLOW and self.repository.use_copy:
                payload = _options_flow_copy_data(rows)  # type: ignore[arg-type]  # rows of the table
                # what the staged rows hold in memory: the payload and about twice as much in row objects (measured)
                return Staged(rows, payload, 3 * len(payload))
            size = 0
            for row in rows:
                raw = getattr(row, "raw", None)
                size += 256 + (len(text) if (text := _json(raw)) is not None else 0)
                if isinstance(row, DeadLetter):
                    size += len(row.frame) + len(row.reason)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise DataRejected(f"the row cannot be encoded for PostgreSQL: {type(exc).__name__}: {exc}") from None
        return Staged(rows, None, size)

    def commit(self, batch: Sequence[Staged]) -> int:
        rows = [row for staged in batch for row in staged.rows]
        payloads = [staged.payload for staged in batch]
        payload = b"".join(payloads) if payloads and all(isinstance(p, bytes) for p in payloads) else None  # type: ignore[arg-type]
        if payload is None and self.table is Table.OPTIONS_FLOW and self.repository.use_copy:
            payload = _options_flow_copy_data(rows)  # type: ignore[arg-type]
        return self.repository.commit(self.table, rows, payload)


def _merge_gaps(rows: Sequence[FeedGapRow]) -> list[FeedGapRow]:
    """One row per gap id: a field set by any of its writes is kept (a gap's writes only ever add)."""
    merged: dict[UUID, FeedGapRow] = {}
    for row in rows:
        known = merged.get(row.id)
        merged[row.id] = row if known is None else attrs.evolve(
            known,
            ended_at=known.ended_at or row.ended_at,
            instance_id=known.instance_id or row.instance_id,
            backfill_status=row.backfill_status or known.backfill_status,
            backfill_rows=row.backfill_rows if row.backfill_rows is not None else known.backfill_rows,
            backfill_detail=row.backfill_detail or known.backfill_detail,
        )
    return list(merged.values())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _prepare_connection(connection: psycopg.Connection[Any]) -> None:
    """Every pooled connection gets its COPY staging table once (temporary: private to the session)."""
    connection.execute(_STAGE_DDL)
    connection.commit()


def _probe(
    conninfo: str, kwargs: Mapping[str, Any], configure: Callable[[psycopg.Connection[Any]], None] | None
) -> None:
    """Connect once before opening the pool, so that a wrong URL fails now with libpq's reason.

    A pool that cannot connect only retries until its open timeout and then says "timeout"; the
    probe also runs the pool's ``configure`` step, which fails if the schema is not migrated.
    """
    try:
        with psycopg.connect(conninfo, **kwargs) as connection:
            if configure is not None:
                configure(connection)
    except psycopg.Error as exc:
        raise DatabaseUnreachable(describe_connection_error(exc, conninfo)) from None


PoolMode = Literal["auto", "direct", "session", "transaction"]
SUPABASE_TRANSACTION_POOLER_PORT: Final = 6543


def resolve_pool_mode(conninfo: str, mode: PoolMode) -> PoolMode:
    """``auto``: Supabase's transaction pooler listens on 6543; anything else is taken as session-capable."""
    if mode != "auto":
        return mode
    try:
        port = psycopg.conninfo.conninfo_to_dict(conninfo).get("port")
    except psycopg.ProgrammingError:
        return "direct"
    return "transaction" if str(port) == str(SUPABASE_TRANSACTION_POOLER_PORT) else "direct"


@contextmanager
def open_repository(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    use_copy: bool = True,
    pool_mode: PoolMode = "auto",
    open_timeout_s: float = 15,
    acquire_timeout_s: float = 10,
    require_reachable: bool = True,
) -> Iterator[PostgresRepository]:
    """Open a pool (explicitly, failing fast with a one-line error) and yield a repository on it.

    In ``transaction`` mode (a transaction pooler such as Supabase's on port 6543, or PgBouncer with
    ``pool_mode = transaction``) no server-side prepared statements are used and the COPY staging
    table lives inside each transaction; TLS options such as ``sslmode=require`` come from the URL.
    ``require_reachable=False`` (``bridge run``): a database that does not answer yet is an outage
    like any other, the pool keeps trying in the background and writes retry until it answers.
    """
    transaction_pooler = resolve_pool_mode(conninfo, pool_mode) == "transaction"
    # TCP keepalives: a database host that vanished (no RST) is noticed in about a minute, not hours
    kwargs: dict[str, Any] = {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if transaction_pooler:
        kwargs["prepare_threshold"] = None
    configure = _prepare_connection if use_copy and not transaction_pooler else None
    try:
        _probe(conninfo, kwargs, configure)
    except DatabaseUnreachable as exc:
        if require_reachable:
            raise
        log.warning("the database is unreachable at start; journaling until it answers", error=str(exc))
        reachable = False
    else:
        reachable = True
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        check=ConnectionPool.check_connection,
        configure=configure,
        kwargs=kwargs,
        timeout=acquire_timeout_s,
        # keep trying however long the database is away (psycopg's default gives up after 5 minutes)
        reconnect_timeout=RECONNECT_FOREVER_S,
        name="bridge",
    )
    try:
        pool.open(wait=reachable, timeout=open_timeout_s)
    except PoolTimeout:
        pool.close()
        reason = TimeoutError(f"the pool could not open {min_size} connection(s) in {open_timeout_s:g} s")
        raise DatabaseUnreachable(describe_connection_error(reason, conninfo)) from None
    try:
        yield PostgresRepository(pool, use_copy=use_copy, stage_per_transaction=transaction_pooler)
    finally:
        pool.close()
