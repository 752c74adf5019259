"""tastytrade's account streamer (and the REST snapshots its feed takes) into broker rows.

Streamer messages: ``{"type": "AccountBalance" | "CurrentPosition" | "Order" | …, "data": {…}}`` with
dashed keys and decimal strings; acknowledgements and heartbeats ``{"status": "ok", "action": …}``.
The streamer may batch notifications as ``{"results": [message, …]}`` (the vendor's JS SDK unwraps
it): each element is handled on its own, and a bad one costs only itself.
A money field's sign comes from its ``*-effect`` sibling (``Debit`` = negative); a position's sign
from ``quantity-direction`` (``Short`` = negative, ``Zero`` closes it). Orders are not stored (the
tables hold state, not activity). Snapshot frames (see ``brokers``) carry the REST bodies
``{"data": {"items": [position, …]}}`` and ``{"data": {balance}}``.

``market_value`` = quantity x price x multiplier, the price being the current mark when the message
has one (``mark-price``/``mark``: the REST positions endpoint sends them with ``include-marks=true``),
else the previous close (``close-price``) when it is not zero: a position opened today has a zero
close, and its value is then unknown (null), not zero.

A position's ``updated-at`` is its last change, which may be long ago (a position held for a year);
it is not checked for plausibility in a snapshot, whose ``as_of`` is the time of the observation.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bridge.domain.models import AccountRef, BrokerBalanceRow, BrokerPositionRow, Normalized, ReceivedFrame, Row
from bridge.domain.normalizers.brokers import (
    Problems,
    as_list,
    as_object,
    normalize_broker,
    optional_object,
    snapshot_positions,
    snapshot_rows,
)
from bridge.domain.values import (
    ACCOUNT_STATE_MAX_AGE,
    InvalidValue,
    optional_decimal,
    plausible,
    require_decimal,
    require_text,
    require_timestamp,
)

BROKER: Final = "tastytrade"
IGNORED_TYPES: Final = frozenset({"Order", "ComplexOrder", "OrderChain", "ExternalTransaction", "TradingStatus"})


def normalize_tastytrade(frame: ReceivedFrame) -> Normalized:
    return normalize_broker(frame, _frame_rows)


def _frame_rows(message: object, received_at: datetime, problems: Problems) -> list[Row]:
    if isinstance(message, dict) and "results" in message and "type" not in message:
        rows: list[Row] = []
        for n, element in enumerate(as_list("results", message["results"]), 1):
            found = problems.attempt(f"results {n}: ", lambda: _rows(element, received_at, problems))  # noqa: B023
            rows += found or ()
        return rows
    return list(_rows(message, received_at, problems))


def _rows(message: object, received_at: datetime, problems: Problems) -> tuple[Row, ...]:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object")
    kind = message.get("type")
    if kind is None and "status" in message:
        return ()  # an acknowledgement or heartbeat reply
    if kind == "snapshot":
        return _snapshot(message, problems)
    if not isinstance(kind, str):
        raise InvalidValue(f"type: expected a string, got {kind!r}"[:200])
    if kind in IGNORED_TYPES:
        return ()
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidValue(f"{kind!r}: 'data' must be an object")
    if kind == "CurrentPosition":
        return (position(data, received_at),)
    if kind == "AccountBalance":
        return (balance(data, received_at),)
    raise InvalidValue(f"type {kind!r} is not a message this bridge stores")


def _account(data: dict[str, Any]) -> AccountRef:
    return AccountRef(BROKER, require_text("account-number", data.get("account-number")).strip())


def _signed(data: dict[str, Any], key: str) -> Decimal | None:
    value = optional_decimal(key, data.get(key))
    if value is not None and data.get(f"{key}-effect") == "Debit":
        value = -abs(value)
    return value


def _updated_at(data: dict[str, Any], received_at: datetime) -> datetime:
    value = data.get("updated-at")
    moment = received_at if value is None else require_timestamp("updated-at", value)
    return plausible("updated-at", moment, received_at, ACCOUNT_STATE_MAX_AGE)


def _price(data: dict[str, Any]) -> Decimal | None:
    """The current mark if the message has one, else a non-zero previous close, else unknown."""
    for key in ("mark-price", "mark"):
        mark = optional_decimal(key, data.get(key))
        if mark is not None:
            return mark
    close = optional_decimal("close-price", data.get("close-price"))
    return close if close else None


def position(data: dict[str, Any], received_at: datetime, as_of: datetime | None = None) -> BrokerPositionRow:
    """A position message; with ``as_of`` (a snapshot's time) that is its time and ``updated-at`` is not checked."""
    quantity = abs(require_decimal("quantity", data.get("quantity")))
    direction = data.get("quantity-direction", "Long")
    if direction not in ("Long", "Short", "Zero"):
        raise InvalidValue(f"quantity-direction: {direction!r} is not Long, Short or Zero")
    qty = Decimal(0) if direction == "Zero" else (-quantity if direction == "Short" else quantity)
    price = _price(data)
    multiplier = optional_decimal("multiplier", data.get("multiplier")) or Decimal(1)
    return BrokerPositionRow(
        account=_account(data),
        symbol=require_text("symbol", data.get("symbol")).strip(),
        qty=qty,
        updated_at=_updated_at(data, received_at) if as_of is None else as_of,
        avg_price=optional_decimal("average-open-price", data.get("average-open-price")),
        market_value=None if price is None else qty * price * multiplier,
        raw=data,
    )


def balance(data: dict[str, Any], received_at: datetime, as_of: datetime | None = None) -> BrokerBalanceRow:
    return BrokerBalanceRow(
        account=_account(data),
        updated_at=_updated_at(data, received_at) if as_of is None else as_of,
        cash=_signed(data, "cash-balance"),
        buying_power=_signed(data, "equity-buying-power"),
        maintenance_margin=_signed(data, "maintenance-requirement"),
        equity=_signed(data, "net-liquidating-value"),
        raw=data,
    )


def _snapshot(message: dict[str, Any], problems: Problems) -> tuple[Row, ...]:
    account = AccountRef(BROKER, require_text("account", message.get("account")).strip())
    as_of = require_timestamp("as_of", message.get("as_of"))
    body = optional_object("positions", message.get("positions")) or {}
    data = optional_object("positions.data", body.get("data")) or {}
    items = data.get("items")
    items = [] if items is None else as_list("positions.data.items", items)
    # a snapshot observed these positions at ``as_of``, whatever their own last-change time says
    found = snapshot_positions(
        problems,
        items,
        lambda item: position({**item, "account-number": account.external_account_id}, as_of, as_of),
        lambda item: item.get("symbol"),
    )
    if found is None:
        return ()
    positions, kept = found
    balances = optional_object("balances", message.get("balances")) or {}
    given = balances.get("data")
    state = None
    if given:
        entry = as_object("balances.data", given)
        state = problems.attempt(
            "balances: ", lambda: balance({**entry, "account-number": account.external_account_id}, as_of, as_of)
        )
    return snapshot_rows(account, as_of, positions, state, kept)


__all__ = ["BROKER", "balance", "normalize_tastytrade", "position"]
