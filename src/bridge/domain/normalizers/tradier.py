"""Tradier: REST snapshots of positions and balances, and the account-events stream, into broker rows.

Positions and balances are REST only; the feed polls them and emits each poll as a snapshot frame
(see ``brokers``): positions absent from a snapshot are deleted. Quirks handled: an empty list comes as
the string ``"null"``, a list of one as a bare object. Balances map ``total_cash`` → cash,
``total_equity`` → equity, the margin (or cash, or PDT) section's buying power → buying_power and
``current_requirement`` → maintenance_margin. Account-event frames (orders, heartbeats) carry no state:
the feed polls at once after a fill instead, so they produce no rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bridge.domain.frames import normalize_message
from bridge.domain.models import AccountRef, BrokerBalanceRow, BrokerPositionRow, Normalized, ReceivedFrame, Row
from bridge.domain.normalizers.brokers import snapshot_rows
from bridge.domain.values import InvalidValue, optional_decimal, require_decimal, require_text, require_timestamp

BROKER: Final = "tradier"


def normalize_tradier(frame: ReceivedFrame) -> Normalized:
    return normalize_message(frame, _rows)


def listed(value: object) -> list[dict[str, Any]]:
    """Tradier's list encoding: ``"null"`` or ``None`` for none, a bare object for one."""
    if value in (None, "null", ""):
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    raise InvalidValue(f"expected a list, an object or 'null', got {type(value).__name__}")


def _rows(message: object, received_at: datetime) -> tuple[Row, ...]:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object")
    if message.get("type") != "snapshot":
        return ()  # account events (orders, heartbeats) trigger a poll in the feed; they hold no state
    account = AccountRef(BROKER, require_text("account", message.get("account")))
    as_of = require_timestamp("as_of", message.get("as_of"))
    body = message.get("positions")  # the REST body: {"positions": {"position": [...]}} or {"positions": "null"}
    section = body.get("positions") if isinstance(body, dict) else None
    holdings = listed(section.get("position") if isinstance(section, dict) else section)
    positions = [_position(account, item, as_of) for item in holdings]
    balances = message.get("balances")
    totals = balances.get("balances") if isinstance(balances, dict) else None
    return snapshot_rows(account, as_of, positions, _balance(account, totals, as_of) if totals else None)


def _position(account: AccountRef, item: dict[str, Any], as_of: datetime) -> BrokerPositionRow:
    qty = require_decimal("quantity", item.get("quantity"))
    cost = optional_decimal("cost_basis", item.get("cost_basis"))
    return BrokerPositionRow(
        account=account,
        symbol=require_text("symbol", item.get("symbol")).strip(),
        qty=qty,
        updated_at=as_of,
        avg_price=None if cost is None or qty == 0 else abs(cost / qty),
        market_value=None,
        raw=item,
    )


def _balance(account: AccountRef, body: dict[str, Any], as_of: datetime) -> BrokerBalanceRow:
    buying_power: Decimal | None = None
    for section in ("margin", "cash", "pdt"):
        values = body.get(section)
        if isinstance(values, dict):
            buying_power = optional_decimal(
                f"{section}.buying_power", values.get("stock_buying_power", values.get("cash_available"))
            )
            if buying_power is not None:
                break
    return BrokerBalanceRow(
        account=account,
        updated_at=as_of,
        cash=optional_decimal("total_cash", body.get("total_cash")),
        buying_power=buying_power,
        maintenance_margin=optional_decimal("current_requirement", body.get("current_requirement")),
        equity=optional_decimal("total_equity", body.get("total_equity")),
        raw=body,
    )
