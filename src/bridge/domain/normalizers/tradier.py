"""Tradier: REST snapshots of positions and balances, and the account-events stream, into broker rows.

Positions and balances are REST only; the feed polls them and emits each poll as a snapshot frame
(see ``brokers``): positions absent from a snapshot are deleted. Quirks handled: an empty list comes as
the string ``"null"``, a list of one as a bare object. Balances map ``total_cash`` → cash,
``total_equity`` → equity, the margin (or cash, or PDT) section's buying power → buying_power and
``current_requirement`` → maintenance_margin. Account-event frames (orders, heartbeats) carry no state:
the feed polls at once after a fill instead, so they produce no rows.

``cost_basis`` is the position's total cost ("Cost of the position" in Tradier's response reference),
so ``avg_price`` is ``cost_basis / quantity`` per share: divided by the contract multiplier (100) as
well for an option (an OCC symbol), which makes it the per-share premium tastytrade's
``average-open-price`` and Schwab's ``averagePrice`` give.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from bridge.domain.models import AccountRef, BrokerBalanceRow, BrokerPositionRow, Normalized, ReceivedFrame, Row
from bridge.domain.normalizers.brokers import Problems, normalize_broker, snapshot_positions, snapshot_rows
from bridge.domain.occ import InvalidOptionSymbol, parse_occ
from bridge.domain.values import InvalidValue, optional_decimal, require_decimal, require_text, require_timestamp

BROKER: Final = "tradier"
OPTION_MULTIPLIER: Final = Decimal(100)


def normalize_tradier(frame: ReceivedFrame) -> Normalized:
    return normalize_broker(frame, _rows)


def listed(value: object) -> list[Any]:
    """Tradier's list encoding: ``"null"`` or ``None`` for none, a bare object for one."""
    if value in (None, "null", ""):
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise InvalidValue(f"expected a list, an object or 'null', got {type(value).__name__}")


def _rows(message: object, received_at: datetime, problems: Problems) -> tuple[Row, ...]:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object")
    if message.get("type") != "snapshot":
        return ()  # account events (orders, heartbeats) trigger a poll in the feed; they hold no state
    account = AccountRef(BROKER, require_text("account", message.get("account")).strip())
    as_of = require_timestamp("as_of", message.get("as_of"))
    body = message.get("positions")  # the REST body: {"positions": {"position": [...]}} or {"positions": "null"}
    if body is not None and not isinstance(body, dict):
        raise InvalidValue(f"positions: expected the REST body (an object), got {type(body).__name__}")
    section = (body or {}).get("positions")
    holdings = listed(section.get("position") if isinstance(section, dict) else section)
    found = snapshot_positions(problems, holdings, lambda item: _position(account, item, as_of), _symbol_of)
    if found is None:
        return ()
    positions, kept = found
    balances = message.get("balances")
    totals = balances.get("balances") if isinstance(balances, dict) else None
    state = None
    if totals:
        if not isinstance(totals, dict):
            raise InvalidValue(f"balances.balances: expected an object, got {type(totals).__name__}")
        state = problems.attempt("balances: ", lambda: _balance(account, totals, as_of))
    return snapshot_rows(account, as_of, positions, state, kept)


def _symbol_of(item: dict[str, Any]) -> object:
    return item.get("symbol")


def is_option(symbol: str) -> bool:
    try:
        parse_occ(symbol)
    except (InvalidOptionSymbol, ValueError):
        return False
    return True


def _position(account: AccountRef, item: dict[str, Any], as_of: datetime) -> BrokerPositionRow:
    qty = require_decimal("quantity", item.get("quantity"))
    cost = optional_decimal("cost_basis", item.get("cost_basis"))
    symbol = require_text("symbol", item.get("symbol")).strip()
    per_unit = OPTION_MULTIPLIER if is_option(symbol) else Decimal(1)
    return BrokerPositionRow(
        account=account,
        symbol=symbol,
        qty=qty,
        updated_at=as_of,
        avg_price=None if cost is None or qty == 0 else abs(cost / (qty * per_unit)),
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
