"""tastytrade's account streamer (and the REST snapshots its feed takes) into broker rows.

Streamer messages: ``{"type": "AccountBalance" | "CurrentPosition" | "Order" | …, "data": {…}}`` with
dashed keys and decimal strings; acknowledgements and heartbeats ``{"status": "ok", "action": …}``.
A money field's sign comes from its ``*-effect`` sibling (``Debit`` = negative); a position's sign
from ``quantity-direction`` (``Short`` = negative, ``Zero`` closes it). Orders are not stored (the
tables hold state, not activity). Snapshot frames (see ``brokers``) carry the REST bodies
``{"data": {"items": [position, …]}}`` and ``{"data": {balance}}``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import attrs

from bridge.domain.frames import normalize_message
from bridge.domain.models import AccountRef, BrokerBalanceRow, BrokerPositionRow, Normalized, ReceivedFrame, Row
from bridge.domain.normalizers.brokers import snapshot_rows
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
    return normalize_message(frame, _rows)


def _rows(message: object, received_at: datetime) -> tuple[Row, ...]:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object")
    kind = message.get("type")
    if kind is None and "status" in message:
        return ()  # an acknowledgement or heartbeat reply
    data = message.get("data")
    if kind == "snapshot":
        return _snapshot(message, received_at)
    if kind in IGNORED_TYPES:
        return ()
    if not isinstance(data, dict):
        raise InvalidValue(f"{kind}: 'data' must be an object")
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


def position(data: dict[str, Any], received_at: datetime) -> BrokerPositionRow:
    quantity = abs(require_decimal("quantity", data.get("quantity")))
    direction = data.get("quantity-direction", "Long")
    if direction not in ("Long", "Short", "Zero"):
        raise InvalidValue(f"quantity-direction: {direction!r} is not Long, Short or Zero")
    qty = Decimal(0) if direction == "Zero" else (-quantity if direction == "Short" else quantity)
    price = optional_decimal("mark", data.get("mark", data.get("mark-price", data.get("close-price"))))
    multiplier = optional_decimal("multiplier", data.get("multiplier")) or Decimal(1)
    return BrokerPositionRow(
        account=_account(data),
        symbol=require_text("symbol", data.get("symbol")).strip(),
        qty=qty,
        updated_at=_updated_at(data, received_at),
        avg_price=optional_decimal("average-open-price", data.get("average-open-price")),
        market_value=None if price is None else qty * price * multiplier,
        raw=data,
    )


def balance(data: dict[str, Any], received_at: datetime) -> BrokerBalanceRow:
    return BrokerBalanceRow(
        account=_account(data),
        updated_at=_updated_at(data, received_at),
        cash=_signed(data, "cash-balance"),
        buying_power=_signed(data, "equity-buying-power"),
        maintenance_margin=_signed(data, "maintenance-requirement"),
        equity=_signed(data, "net-liquidating-value"),
        raw=data,
    )


def _snapshot(message: dict[str, Any], received_at: datetime) -> tuple[Row, ...]:
    account = AccountRef(BROKER, require_text("account", message.get("account")))
    as_of = require_timestamp("as_of", message.get("as_of"))
    items = ((message.get("positions") or {}).get("data") or {}).get("items") or []
    # a snapshot observed these positions at ``as_of``, whatever their own last-change time says
    positions = [
        attrs.evolve(position({"account-number": account.external_account_id, **item}, received_at), updated_at=as_of)
        for item in items
    ]
    body = (message.get("balances") or {}).get("data")
    found = balance({"account-number": account.external_account_id, **body}, received_at) if body else None
    return snapshot_rows(account, as_of, positions, found)
