"""Rows of the bridge's tables, as immutable values.

One class per table of the design (``migrations/0001_stream_bridge_tables.sql``). Field names are the
column names so that adapters can map a row to SQL without a translation table. Money and sizes are
``Decimal`` because the columns are ``numeric`` and a float would change the stored value.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal, NewType, TypeAlias
from uuid import UUID

import attrs

JsonObject: TypeAlias = dict[str, Any]
RawJson = NewType("RawJson", str)
"""A JSON object's text, serialized where the vendor's message was decoded.

The Polygon firehose keeps each trade's ``raw`` this way rather than as the decoded dict: the dict
then dies with its frame, while it is still in the CPU's caches, instead of a batch later, and the
COPY encoder has nothing left to serialize (measured: 0.6 us of the ~7 a trade costs to normalize
and encode, and about 400 bytes less per buffered row)."""

Side = Literal["buy", "sell", "unknown"]
OptionType = Literal["call", "put"]

SIDES: Final = frozenset({"buy", "sell", "unknown"})
OPTION_TYPES: Final = frozenset({"call", "put"})


class Table(enum.StrEnum):
    """Every table the bridge writes, in the order a batch of mixed rows is applied."""

    OPTIONS_FLOW = "options_flow"
    NEWS_EVENTS = "news_events"
    BROKER_ACCOUNTS = "broker_accounts"
    BROKER_POSITIONS = "broker_positions"
    BROKER_BALANCES = "broker_balances"
    DEAD_LETTERS = "bridge_dead_letters"
    FEED_GAPS = "bridge_feed_gaps"


DATA_TABLES: Final = (
    Table.OPTIONS_FLOW,
    Table.NEWS_EVENTS,
    Table.BROKER_ACCOUNTS,
    Table.BROKER_POSITIONS,
    Table.BROKER_BALANCES,
)


@attrs.frozen
class ReceivedFrame:
    """One inbound WebSocket message exactly as it arrived, with who sent it and when.

    ``decoded`` optionally carries the frame's JSON already parsed by a feed that had to look
    inside it (to manage subscriptions), so the normalizer does not parse it a second time.
    """

    feed: str
    received_at: datetime
    text: str
    decoded: object = attrs.field(default=None, eq=False, repr=False)
    problem: tuple[str, str] | None = attrs.field(default=None, eq=False)
    """(kind, reason) when the transport already knows the frame is unusable (e.g. invalid UTF-8)."""


@attrs.frozen
class AccountRef:
    """A broker account as vendors name it; the database id is resolved by the repository."""

    broker: str
    external_account_id: str


@attrs.define
class OptionsFlowRow:
    """One trade. The only row class that is not ``frozen``: it is built once per trade of the
    firehose, and a frozen attrs ``__init__`` costs four times as much (1.2 against 0.3 us for its
    17 fields, measured in bench/). Nothing mutates a row after it is built; treat it as frozen.
    """

    id: UUID
    received_at: datetime
    event_ts: datetime
    symbol: str
    option_symbol: str
    side: Side
    size: Decimal
    notional: Decimal | None = None
    strike: Decimal | None = None
    expiration: date | None = None
    option_type: OptionType | None = None
    trade_price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    venue: str | None = None
    source: str = "dev_console"
    raw: JsonObject | RawJson | None = None

    table: ClassVar[Table] = Table.OPTIONS_FLOW


@attrs.frozen
class NewsEventRow:
    id: UUID
    received_at: datetime
    source: str
    headline: str
    event_ts: datetime | None = None
    symbol: str | None = None
    body: str | None = None
    url: str | None = None
    category: str | None = None
    sentiment: str | None = None
    importance: int | None = None
    raw: JsonObject | None = None
    removal: bool = False
    """The vendor withdrew the article: only ``raw`` of an existing row changes (history is kept)."""

    table: ClassVar[Table] = Table.NEWS_EVENTS

    @property
    def natural_key(self) -> tuple[str, datetime | None, str]:
        """The table's unique key: a later row with the same key replaces the earlier one."""
        return (self.source, self.event_ts, self.headline)


@attrs.frozen
class BrokerAccountRow:
    account: AccountRef
    label: str | None = None

    table: ClassVar[Table] = Table.BROKER_ACCOUNTS


@attrs.frozen
class BrokerPositionRow:
    account: AccountRef
    symbol: str
    qty: Decimal
    updated_at: datetime
    avg_price: Decimal | None = None
    market_value: Decimal | None = None
    raw: JsonObject | None = None

    table: ClassVar[Table] = Table.BROKER_POSITIONS

    @property
    def closes_position(self) -> bool:
        """Quantity zero means the position no longer exists: its row is deleted."""
        return self.qty == 0


@attrs.frozen
class BrokerPositionsSnapshot:
    """A full list of an account's positions as of a moment (REST snapshots).

    Its positions travel as ``BrokerPositionRow``s beside it; the snapshot itself says which symbols
    the account holds, so a stored position it no longer lists (and not updated since) is deleted.
    """

    account: AccountRef
    as_of: datetime
    symbols: tuple[str, ...]

    table: ClassVar[Table] = Table.BROKER_POSITIONS


@attrs.frozen
class BrokerBalanceRow:
    account: AccountRef
    updated_at: datetime
    cash: Decimal | None = None
    buying_power: Decimal | None = None
    maintenance_margin: Decimal | None = None
    equity: Decimal | None = None
    raw: JsonObject | None = None

    table: ClassVar[Table] = Table.BROKER_BALANCES


@attrs.frozen
class DeadLetter:
    """A frame (or one element of it) the bridge could not turn into a row, and why."""

    id: UUID
    feed: str
    received_at: datetime
    reason: str
    frame: str
    kind: str = attrs.field(default="invalid_message", eq=False)
    """A short category for metrics (``invalid_json``, ``invalid_message``, …); not stored."""
    frame_length: int | None = attrs.field(default=None, eq=False)
    """Characters in the whole frame, when ``frame`` holds only its first part."""
    frame_sha256: str | None = attrs.field(default=None, eq=False)
    """SHA-256 of the whole frame's UTF-8 text (hex), to match a cut frame with the journal or a recording."""

    table: ClassVar[Table] = Table.DEAD_LETTERS


@attrs.frozen
class FeedGapRow:
    """An interval in which a feed was not receiving, as the gap ledger records it.

    A gap is written when it opens and again when it closes or is backfilled, always under the same id;
    the repository merges the writes (a field once set is kept), so the order they land in does not matter.
    """

    id: UUID
    feed: str
    started_at: datetime
    reason: str
    ended_at: datetime | None = None
    instance_id: str | None = None
    backfill_status: str | None = None
    backfill_rows: int | None = None
    backfill_detail: str | None = None

    table: ClassVar[Table] = Table.FEED_GAPS


Row: TypeAlias = (
    OptionsFlowRow
    | NewsEventRow
    | BrokerAccountRow
    | BrokerPositionRow
    | BrokerPositionsSnapshot
    | BrokerBalanceRow
    | DeadLetter
    | FeedGapRow
)


@attrs.frozen
class Normalized:
    """What one frame became: rows for the tables, and dead letters for what could not be used."""

    rows: tuple[Row, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()

    def __add__(self, other: Normalized) -> Normalized:
        return Normalized(self.rows + other.rows, self.dead_letters + other.dead_letters)


ROW_CLASSES: Final[dict[str, type[Row]]] = {
    cls.__name__: cls
    for cls in (
        OptionsFlowRow,
        NewsEventRow,
        BrokerAccountRow,
        BrokerPositionRow,
        BrokerPositionsSnapshot,
        BrokerBalanceRow,
        DeadLetter,
        FeedGapRow,
    )
}
"""Every row class by name."""
