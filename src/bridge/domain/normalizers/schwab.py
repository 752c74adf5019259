"""Schwab (the successor of the TD Ameritrade API): REST account snapshots, and the streamer's frames.

Positions and balances come from ``GET /trader/v1/accounts?fields=positions``: a list of
``{"securitiesAccount": {"accountNumber", "type", "positions": [{"longQuantity", "shortQuantity",
"averagePrice", "marketValue", "instrument": {"symbol"}}], "currentBalances": {…}}}``; the feed emits each
poll as one snapshot frame ``{"type": "snapshot", "as_of": ISO, "accounts": <that list>}`` and every
account in it becomes a snapshot (positions absent from it are deleted). Balances: ``cashBalance`` →
cash, ``buyingPower`` → buying_power (a cash account has none: its buying power is
``cashAvailableForTrading``), ``maintenanceRequirement`` → maintenance_margin, ``liquidationValue`` (or
``equity``) → equity. Streamer frames (``response``, ``notify`` heartbeats, ``ACCT_ACTIVITY`` data) carry
no state: the feed polls at once on account activity. One bad account costs only itself.
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
    snapshot_positions,
    snapshot_rows,
)
from bridge.domain.values import InvalidValue, optional_decimal, require_text, require_timestamp

BROKER: Final = "schwab"


def normalize_schwab(frame: ReceivedFrame) -> Normalized:
    return normalize_broker(frame, _rows)


def _rows(message: object, received_at: datetime, problems: Problems) -> list[Row]:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object")
    if message.get("type") != "snapshot":
        return []  # streamer responses, heartbeats and account activity hold no state
    as_of = require_timestamp("as_of", message.get("as_of"))
    accounts = message.get("accounts")
    if not isinstance(accounts, list):
        raise InvalidValue("accounts: expected the list GET /trader/v1/accounts returns")
    rows: list[Row] = []
    for n, entry in enumerate(accounts, 1):
        rows += problems.attempt(f"account {n}: ", lambda: _account_rows(entry, as_of, problems)) or ()  # noqa: B023
    return rows


def _account_rows(entry: object, as_of: datetime, problems: Problems) -> tuple[Row, ...]:
    given = entry.get("securitiesAccount") if isinstance(entry, dict) else None
    if not isinstance(given, dict):
        raise InvalidValue("each entry needs a 'securitiesAccount' object")
    body: dict[str, Any] = given
    account = AccountRef(BROKER, require_text("accountNumber", body.get("accountNumber")).strip())
    items = body.get("positions")
    found = snapshot_positions(
        problems,
        [] if items is None else as_list("positions", items),
        lambda item: _position(account, item, as_of),
        _symbol_of,
    )
    if found is None:
        return ()
    positions, kept = found
    balances = body.get("currentBalances")
    balance = None
    if balances is not None:
        values = as_object("currentBalances", balances)
        balance = problems.attempt("currentBalances: ", lambda: _balance(account, values, as_of))
    return snapshot_rows(account, as_of, positions, balance, kept)


def _symbol_of(item: dict[str, Any]) -> object:
    instrument = item.get("instrument")
    return instrument.get("symbol") if isinstance(instrument, dict) else None


def _position(account: AccountRef, item: dict[str, Any], as_of: datetime) -> BrokerPositionRow:
    given = item.get("instrument")
    instrument: dict[str, Any] = given if isinstance(given, dict) else {}
    long_qty = optional_decimal("longQuantity", item.get("longQuantity")) or Decimal(0)
    short_qty = optional_decimal("shortQuantity", item.get("shortQuantity")) or Decimal(0)
    return BrokerPositionRow(
        account=account,
        symbol=require_text("instrument.symbol", instrument.get("symbol")).strip(),
        qty=long_qty - short_qty,
        updated_at=as_of,
        avg_price=optional_decimal("averagePrice", item.get("averagePrice")),
        market_value=optional_decimal("marketValue", item.get("marketValue")),
        raw=item,
    )


def _balance(account: AccountRef, body: dict[str, Any], as_of: datetime) -> BrokerBalanceRow:
    buying_power = optional_decimal("buyingPower", body.get("buyingPower"))
    if buying_power is None:  # a cash account
        buying_power = optional_decimal("cashAvailableForTrading", body.get("cashAvailableForTrading"))
    return BrokerBalanceRow(
        account=account,
        updated_at=as_of,
        cash=optional_decimal("cashBalance", body.get("cashBalance")),
        buying_power=buying_power,
        maintenance_margin=optional_decimal("maintenanceRequirement", body.get("maintenanceRequirement")),
        equity=optional_decimal("liquidationValue", body.get("liquidationValue", body.get("equity"))),
        raw=body,
    )
