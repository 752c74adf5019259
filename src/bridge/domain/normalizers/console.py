"""The Developer Console's canonical format (feed ``console``) into rows.

A frame is one JSON object or an array of them: ``{"type": TABLE, "data": {...}}`` where ``data``
keys are the table's column names (see ARCHITECTURE.md). Choices made where the contract is silent:

- Missing ``symbol``, ``strike``, ``expiration`` or ``option_type`` of a trade are read from its OCC
  ``option_symbol``; a missing ``side`` is inferred from ``trade_price`` against ``bid``/``ask`` by the
  NBBO rule; a missing ``notional`` is ``trade_price x size x 100``.
- ``raw`` is the message's own ``raw`` object plus any unknown keys, or, when it has no ``raw``, the
  whole ``data`` object as sent.
- ``source`` defaults to ``dev_console`` for news as for trades.
- Ids are deterministic: a trade's id hashes its whole ``data`` (identical messages are one trade),
  a news row's id hashes its unique key.
- A frame with bad messages yields the good ones as rows and one dead letter listing every reason;
  a message that fails in a way nothing foresaw is listed in a second one, of kind
  ``normalizer_error``. Nothing a frame holds makes the normalizer raise.
- Numbers are exact: a frame with long numbers is read with ``Decimal`` ones, which ``raw`` keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs
import orjson

from bridge.domain.frames import NORMALIZER_ERROR, dead_letter, unexpected
from bridge.domain.ids import stable_id
from bridge.domain.models import (
    OPTION_TYPES,
    SIDES,
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    DeadLetter,
    JsonObject,
    NewsEventRow,
    Normalized,
    OptionsFlowRow,
    OptionType,
    ReceivedFrame,
    Row,
    Side,
    Table,
)
from bridge.domain.occ import InvalidOptionSymbol, OptionContract, parse_occ, strip_vendor_prefix
from bridge.domain.side import infer_side
from bridge.domain.values import (
    ACCOUNT_STATE_MAX_AGE,
    NEWS_MAX_AGE,
    TRADE_MAX_AGE,
    InvalidJson,
    InvalidValue,
    exact_product,
    loads_exact,
    optional_date,
    optional_decimal,
    optional_int,
    optional_text,
    optional_timestamp,
    plausible,
    require_choice,
    require_decimal,
    require_text,
    require_timestamp,
    storable,
)

DEFAULT_SOURCE: Final = "dev_console"

COLUMNS: Final[Mapping[Table, frozenset[str]]] = {
    Table.OPTIONS_FLOW: frozenset(
        "event_ts symbol option_symbol side size notional strike expiration option_type trade_price"
        " bid ask venue source raw".split()
    ),
    Table.NEWS_EVENTS: frozenset("event_ts source symbol headline body url category sentiment importance raw".split()),
    Table.BROKER_ACCOUNTS: frozenset("broker external_account_id label".split()),
    Table.BROKER_POSITIONS: frozenset(
        "broker external_account_id symbol qty avg_price market_value updated_at raw".split()
    ),
    Table.BROKER_BALANCES: frozenset(
        "broker external_account_id cash buying_power maintenance_margin equity updated_at raw".split()
    ),
}


def normalize_console(frame: ReceivedFrame) -> Normalized:
    try:
        decoded = frame.decoded if frame.decoded is not None else loads_exact(frame.text)
    except InvalidJson as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
    if isinstance(decoded, dict):
        messages: list[object] = [decoded]
        label: Callable[[int], str] = lambda _: ""
    elif isinstance(decoded, list):
        messages = decoded
        label = lambda i: f"message {i}: "
    else:
        reason = f"expected a JSON object or array of objects, got {type(decoded).__name__}"
        return Normalized(dead_letters=(dead_letter(frame, [reason]),))

    rows: list[Row] = []
    reasons: list[str] = []
    failures: list[str] = []
    for index, message in enumerate(messages):
        try:
            rows.append(_message_row(message, frame.received_at))
        except InvalidValue as exc:
            reasons.append(f"{label(index)}{exc}")
        except Exception as exc:  # unforeseen: this message only, the frame's others go on
            failures.append(f"{label(index)}{unexpected(exc)}")
    return Normalized(rows=tuple(rows), dead_letters=_dead_letters(frame, reasons, failures))


def _dead_letters(frame: ReceivedFrame, reasons: list[str], failures: list[str]) -> tuple[DeadLetter, ...]:
    """Refused messages in one dead letter, unexpected failures in another (with an id of its own)."""
    letters = [dead_letter(frame, reasons)] if reasons else []
    if failures:
        letter = dead_letter(frame, failures, NORMALIZER_ERROR)
        if reasons:
            letter = attrs.evolve(letter, id=stable_id("dead_letter", NORMALIZER_ERROR, str(letter.id)))
        letters.append(letter)
    return tuple(letters)


def _message_row(message: object, received_at: datetime) -> Row:
    if not isinstance(message, dict):
        raise InvalidValue("expected an object with 'type' and 'data'")
    kind = message.get("type")
    try:
        table = Table(kind) if isinstance(kind, str) else None
    except ValueError:
        table = None
    if table is None or table not in _BUILDERS:
        expected = ", ".join(sorted(_BUILDERS))
        raise InvalidValue(f"unknown type {kind!r}; expected one of {expected}")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidValue(f"{table}: 'data' must be an object")
    try:
        return _BUILDERS[table](data, received_at)
    except InvalidValue as exc:
        raise InvalidValue(f"{table}: {exc}") from None


def _raw(table: Table, data: JsonObject) -> JsonObject | None:
    unknown = {key: value for key, value in data.items() if key not in COLUMNS[table]}
    given = data.get("raw")
    if given is None:
        return storable(data)
    if not isinstance(given, dict):
        raise InvalidValue(f"raw: expected an object, got {type(given).__name__}")
    return storable({**given, **unknown})


def _identity(data: JsonObject) -> str:
    """``data`` as canonical JSON (sorted keys), its numbers exactly as sent, for a trade's id."""
    try:
        return orjson.dumps(storable(data), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:  # storable checked the unsorted form; this cannot differ
        raise InvalidValue(f"the message cannot be encoded as JSON: {exc}") from None


def _options_flow(data: JsonObject, received_at: datetime) -> OptionsFlowRow:
    option_symbol = strip_vendor_prefix(require_text("option_symbol", data.get("option_symbol")).strip())
    contract: OptionContract | None
    try:
        contract = parse_occ(option_symbol)
    except InvalidOptionSymbol as exc:
        contract = None
        occ_problem = str(exc)
    size = require_decimal("size", data.get("size"))
    if size <= 0:
        raise InvalidValue(f"size: must be positive, got {data.get('size')!r}")
    trade_price = optional_decimal("trade_price", data.get("trade_price"))
    bid = optional_decimal("bid", data.get("bid"))
    ask = optional_decimal("ask", data.get("ask"))

    def from_contract(column: str) -> Any:
        if contract is None:
            raise InvalidValue(f"{column}: missing, and option_symbol gives none: {occ_problem}")
        return {
            "symbol": contract.underlying,
            "strike": contract.strike,
            "expiration": contract.expiration,
            "option_type": contract.option_type,
        }[column]

    symbol = optional_text("symbol", data.get("symbol")) or from_contract("symbol")
    strike = optional_decimal("strike", data.get("strike"))
    expiration = optional_date("expiration", data.get("expiration"))
    option_type: OptionType | None
    if data.get("option_type") is not None:
        option_type = require_choice("option_type", data["option_type"], OPTION_TYPES)  # type: ignore[assignment]
    else:
        option_type = from_contract("option_type") if contract is not None else None
    side: Side
    if data.get("side") is not None:
        side = require_choice("side", data["side"], SIDES)  # type: ignore[assignment]
    else:
        side = infer_side(trade_price, bid, ask) if trade_price is not None else "unknown"
    notional = optional_decimal("notional", data.get("notional"))
    if notional is None and trade_price is not None:
        notional = exact_product(trade_price, size, 100)
    source = optional_text("source", data.get("source")) or DEFAULT_SOURCE
    return OptionsFlowRow(
        id=stable_id("options_flow", source, _identity(data)),
        received_at=received_at,
        event_ts=plausible("event_ts", require_timestamp("event_ts", data.get("event_ts")), received_at, TRADE_MAX_AGE),
        symbol=symbol,
        option_symbol=contract.occ_symbol if contract is not None else option_symbol,
        side=side,
        size=size,
        notional=notional,
        strike=strike if strike is not None else (contract.strike if contract else None),
        expiration=expiration if expiration is not None else (contract.expiration if contract else None),
        option_type=option_type,
        trade_price=trade_price,
        bid=bid,
        ask=ask,
        venue=optional_text("venue", data.get("venue")),
        source=source,
        raw=_raw(Table.OPTIONS_FLOW, data),
    )


def _joined(column: str, value: object, separator: str) -> str | None:
    """Tickers or categories may come as a list; the column holds them joined, in order."""
    if isinstance(value, list):
        return separator.join(require_text(column, item).strip() for item in value) or None
    return optional_text(column, value)


def _news_events(data: JsonObject, received_at: datetime) -> NewsEventRow:
    source = optional_text("source", data.get("source")) or DEFAULT_SOURCE
    event_ts = optional_timestamp("event_ts", data.get("event_ts"))
    if event_ts is not None:
        plausible("event_ts", event_ts, received_at, NEWS_MAX_AGE)
    headline = require_text("headline", data.get("headline"))
    return NewsEventRow(
        id=stable_id("news_events", source, event_ts.isoformat() if event_ts else None, headline),
        received_at=received_at,
        source=source,
        headline=headline,
        event_ts=event_ts,
        symbol=_joined("symbol", data.get("symbol"), ","),
        body=_text_or_none("body", data.get("body")),
        url=optional_text("url", data.get("url")),
        category=_joined("category", data.get("category"), ","),
        sentiment=_text_or_none("sentiment", data.get("sentiment")),
        importance=optional_int("importance", data.get("importance")),
        raw=_raw(Table.NEWS_EVENTS, data),
    )


def _text_or_none(column: str, value: object) -> str | None:
    """Free text may legitimately be empty; only its type and NULs are checked."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{column}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidValue(f"{column}: contains a NUL character, which PostgreSQL text cannot store")
    return value


def _account(data: JsonObject) -> AccountRef:
    return AccountRef(
        broker=require_text("broker", data.get("broker")).strip().lower(),
        external_account_id=require_text("external_account_id", data.get("external_account_id")).strip(),
    )


def _broker_accounts(data: JsonObject, received_at: datetime) -> BrokerAccountRow:
    return BrokerAccountRow(account=_account(data), label=optional_text("label", data.get("label")))


def _broker_positions(data: JsonObject, received_at: datetime) -> BrokerPositionRow:
    return BrokerPositionRow(
        account=_account(data),
        symbol=require_text("symbol", data.get("symbol")).strip(),
        qty=require_decimal("qty", data.get("qty")),
        updated_at=plausible(
            "updated_at", require_timestamp("updated_at", data.get("updated_at")), received_at, ACCOUNT_STATE_MAX_AGE
        ),
        avg_price=optional_decimal("avg_price", data.get("avg_price")),
        market_value=optional_decimal("market_value", data.get("market_value")),
        raw=_raw(Table.BROKER_POSITIONS, data),
    )


def _broker_balances(data: JsonObject, received_at: datetime) -> BrokerBalanceRow:
    return BrokerBalanceRow(
        account=_account(data),
        updated_at=plausible(
            "updated_at", require_timestamp("updated_at", data.get("updated_at")), received_at, ACCOUNT_STATE_MAX_AGE
        ),
        cash=optional_decimal("cash", data.get("cash")),
        buying_power=optional_decimal("buying_power", data.get("buying_power")),
        maintenance_margin=optional_decimal("maintenance_margin", data.get("maintenance_margin")),
        equity=optional_decimal("equity", data.get("equity")),
        raw=_raw(Table.BROKER_BALANCES, data),
    )


_BUILDERS: Final[Mapping[Table, Callable[[JsonObject, datetime], Row]]] = {
    Table.OPTIONS_FLOW: _options_flow,
    Table.NEWS_EVENTS: _news_events,
    Table.BROKER_ACCOUNTS: _broker_accounts,
    Table.BROKER_POSITIONS: _broker_positions,
    Table.BROKER_BALANCES: _broker_balances,
}
