"""tastytrade and Tradier messages and snapshots into broker rows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    ReceivedFrame,
)
from bridge.domain.normalizers.tastytrade import normalize_tastytrade
from bridge.domain.normalizers.tradier import listed, normalize_tradier

RECEIVED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
TASTY = AccountRef("tastytrade", "5WT00001")
TRADIER = AccountRef("tradier", "VA000042")


def frame(feed: str, message: object) -> ReceivedFrame:
    return ReceivedFrame(feed, RECEIVED, orjson.dumps(message).decode())


def test_a_tastytrade_short_position_and_a_debit_balance() -> None:
    position = {"account-number": "5WT00001", "symbol": "SPY   251219C00650000", "instrument-type": "Equity Option",
                "quantity": "3", "quantity-direction": "Short", "average-open-price": "2.35", "mark": "2.50",
                "multiplier": 100, "updated-at": "2026-11-20T14:29:00.000+00:00"}  # fmt: skip
    (row,) = normalize_tastytrade(frame("tastytrade", {"type": "CurrentPosition", "data": position})).rows
    at = datetime(2026, 11, 20, 14, 29, tzinfo=UTC)
    symbol = "SPY   251219C00650000"
    assert row == BrokerPositionRow(TASTY, symbol, Decimal(-3), at, Decimal("2.35"), Decimal(-750), position)
    balance = {"account-number": "5WT00001", "cash-balance": "1200.50", "cash-balance-effect": "Debit",
               "net-liquidating-value": "65000.10", "net-liquidating-value-effect": "Credit",
               "equity-buying-power": "30000", "maintenance-requirement": "5000.25",
               "updated-at": "2026-11-20T14:29:30Z"}  # fmt: skip
    (row,) = normalize_tastytrade(frame("tastytrade", {"type": "AccountBalance", "data": balance})).rows
    assert isinstance(row, BrokerBalanceRow)
    assert (row.cash, row.equity, row.buying_power, row.maintenance_margin) == (
        Decimal("-1200.50"), Decimal("65000.10"), Decimal(30000), Decimal("5000.25"))  # fmt: skip


def test_tastytrade_acks_orders_and_zero_direction() -> None:
    assert normalize_tastytrade(frame("tastytrade", {"status": "ok", "action": "heartbeat"})).rows == ()
    assert normalize_tastytrade(frame("tastytrade", {"type": "Order", "data": {"id": 1}})).rows == ()
    closed = {"account-number": "5WT00001", "symbol": "AAPL", "quantity": "0", "quantity-direction": "Zero"}
    (row,) = normalize_tastytrade(frame("tastytrade", {"type": "CurrentPosition", "data": closed})).rows
    assert isinstance(row, BrokerPositionRow) and row.closes_position


def test_a_tastytrade_snapshot_lists_what_the_account_holds() -> None:
    snapshot = {"type": "snapshot", "account": "5WT00001", "as_of": "2026-11-20T14:30:00Z",
                "positions": {"data": {"items": [{"symbol": "SPY", "quantity": "10", "quantity-direction": "Long"}]}},
                "balances": {"data": {"cash-balance": "10", "net-liquidating-value": "20"}}}  # fmt: skip
    rows = normalize_tastytrade(frame("tastytrade", snapshot)).rows
    assert [type(row) for row in rows] == [
        BrokerAccountRow,
        BrokerPositionRow,
        BrokerPositionsSnapshot,
        BrokerBalanceRow,
    ]
    assert rows[2] == BrokerPositionsSnapshot(TASTY, RECEIVED, ("SPY",))


@pytest.mark.parametrize(
    ("positions", "symbols"),
    [
        ({"positions": "null"}, ()),
        ({"positions": {"position": {"symbol": "AAPL", "quantity": 5, "cost_basis": 1000}}}, ("AAPL",)),
        (
            {"positions": {"position": [{"symbol": "AAPL", "quantity": 5}, {"symbol": "QQQ", "quantity": -2}]}},
            ("AAPL", "QQQ"),
        ),
    ],
)
def test_tradier_snapshots_in_each_of_its_list_encodings(positions: object, symbols: tuple[str, ...]) -> None:
    balances = {"balances": {"account_number": "VA000042", "total_equity": 17798.36, "total_cash": 8000,
                             "current_requirement": 1200, "margin": {"stock_buying_power": 6363.86}}}  # fmt: skip
    snapshot = {"type": "snapshot", "account": "VA000042", "as_of": "2026-11-20T14:30:00Z", "positions": positions,
                "balances": balances}  # fmt: skip
    rows = normalize_tradier(frame("tradier", snapshot)).rows
    marker = next(row for row in rows if isinstance(row, BrokerPositionsSnapshot))
    assert marker.symbols == symbols and marker.account == TRADIER
    balance = next(row for row in rows if isinstance(row, BrokerBalanceRow))
    assert (balance.cash, balance.equity, balance.buying_power, balance.maintenance_margin) == (
        Decimal(8000), Decimal("17798.36"), Decimal("6363.86"), Decimal(1200))  # fmt: skip
    if symbols == ("AAPL",):
        assert next(row for row in rows if isinstance(row, BrokerPositionRow)).avg_price == Decimal(200)


def test_tradier_events_hold_no_state_and_bad_bodies_are_dead_lettered() -> None:
    assert normalize_tradier(frame("tradier", {"event": "heartbeat", "status": "active"})).rows == ()
    assert listed("null") == [] and listed({"a": 1}) == [{"a": 1}]
    bad = {"type": "snapshot", "account": "VA1", "as_of": "2026-11-20T14:30:00Z",
           "positions": {"positions": {"position": 7}}}  # fmt: skip
    (letter,) = normalize_tradier(frame("tradier", bad)).dead_letters
    assert "expected a list, an object or 'null'" in letter.reason


def test_a_schwab_accounts_snapshot() -> None:
    from bridge.domain.normalizers.schwab import normalize_schwab

    body = [{"securitiesAccount": {"accountNumber": "87654321", "positions": [
        {"longQuantity": 0, "shortQuantity": 4, "averagePrice": 10.5, "marketValue": -42,
         "instrument": {"symbol": "QQQ"}}],
        "currentBalances": {"cashBalance": 10, "buyingPower": 20, "maintenanceRequirement": 3,
                            "liquidationValue": 40}}}]  # fmt: skip
    rows = normalize_schwab(
        frame("schwab", {"type": "snapshot", "as_of": "2026-11-20T14:30:00Z", "accounts": body})
    ).rows
    position = next(row for row in rows if isinstance(row, BrokerPositionRow))
    assert (position.symbol, position.qty, position.market_value) == ("QQQ", Decimal(-4), Decimal(-42))
    balance = next(row for row in rows if isinstance(row, BrokerBalanceRow))
    assert (balance.cash, balance.buying_power, balance.maintenance_margin, balance.equity) == (10, 20, 3, 40)
    assert normalize_schwab(frame("schwab", {"notify": [{"heartbeat": "1"}]})).rows == ()


# --- totality: whatever arrives, each broker normalizer returns rows and dead letters, never raises ---

import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bridge.domain.frames import NORMALIZER_ERROR  # noqa: E402
from bridge.domain.models import Normalized  # noqa: E402
from bridge.domain.normalizers.schwab import normalize_schwab  # noqa: E402

VENDORS = Path(__file__).parents[1] / "fixtures" / "vendors"
NORMALIZERS: dict[str, Callable[[ReceivedFrame], Normalized]] = {
    "tastytrade": normalize_tastytrade,
    "tradier": normalize_tradier,
    "schwab": normalize_schwab,
}
SCALARS = st.sampled_from(
    "snapshot CurrentPosition AccountBalance null Debit Short 2026-11-20T14:30:00Z 1e999999 -1e-999999".split()
)
KEYS = st.sampled_from(
    "type data results account as_of positions balances items position accounts securitiesAccount symbol quantity"
    " instrument currentBalances account-number".split()
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | KEYS, inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


def _snapshots() -> list[tuple[str, Any]]:
    def load(name: str) -> Any:
        return orjson.loads((VENDORS / name).read_bytes())

    as_of = "2026-11-20T14:30:00Z"
    return [
        ("tastytrade", {"type": "snapshot", "account": "5WT00001", "as_of": as_of,
                        "positions": load("tastytrade/positions_include_marks.json"),
                        "balances": load("tastytrade/balances.json")}),
        ("tastytrade", load("tastytrade/streamer_results_batch.json")),
        ("tradier", {"type": "snapshot", "account": "VA1", "as_of": as_of, "positions": load("tradier/positions.json"),
                     "balances": load("tradier/balances_margin.json")}),
        ("schwab", {"type": "snapshot", "as_of": as_of, "accounts": load("schwab/accounts_with_positions.json")}),
    ]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _check(normalizer: Callable[[ReceivedFrame], Normalized], feed: str, text: str) -> None:
    result = normalizer(ReceivedFrame(feed, RECEIVED, text))
    assert isinstance(result, Normalized)
    for letter in result.dead_letters:
        assert letter.reason and letter.frame == text
        # every shape is foreseen: a reason names the field, no bug surfaces as normalizer_error
        assert NORMALIZER_ERROR not in letter.reason, letter.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(feed=st.sampled_from(sorted(NORMALIZERS)), message=JSON)
def test_no_broker_normalizer_raises_on_arbitrary_json(feed: str, message: object) -> None:
    _check(NORMALIZERS[feed], feed, json.dumps(message))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), replacement=JSON)
def test_no_broker_normalizer_raises_on_vendor_messages_mutated_field_by_field(data: Any, replacement: Any) -> None:
    feed, message = data.draw(st.sampled_from(_snapshots()))
    path = data.draw(st.sampled_from(_paths(message)))
    _check(NORMALIZERS[feed], feed, json.dumps(_replace(message, path, replacement)))


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ("tastytrade", {"type": "snapshot", "account": "A", "as_of": "2026-11-20T14:30:00Z", "positions": []}),
        ("tastytrade", {"type": "snapshot", "account": "A", "as_of": "2026-11-20T14:30:00Z", "balances": [1]}),
        ("tastytrade", {"type": "CurrentPosition", "data": {"quantity": "1", "symbol": ["x"]}}),
        ("tastytrade", {"results": {"type": "CurrentPosition"}}),
        ("tradier", {"type": "snapshot", "account": "A", "as_of": "2026-11-20T14:30:00Z", "positions": []}),
        ("tradier", {"type": "snapshot", "account": "A", "as_of": "2026-11-20T14:30:00Z", "balances": {"balances": 3}}),
        ("schwab", {"type": "snapshot", "as_of": "2026-11-20T14:30:00Z",
                    "accounts": [{"securitiesAccount": {"accountNumber": "1", "positions": {"a": 1}}}]}),
        ("schwab", {"type": "snapshot", "as_of": "2026-11-20T14:30:00Z",
                    "accounts": [{"securitiesAccount": {"accountNumber": "1", "currentBalances": []}}]}),
    ],
)  # fmt: skip
def test_shapes_that_used_to_raise_are_one_dead_letter_each(feed: str, message: object) -> None:
    result = NORMALIZERS[feed](frame(feed, message))
    (letter,) = result.dead_letters
    assert letter.kind in ("invalid_message", NORMALIZER_ERROR) and letter.reason


def test_an_unexpected_exception_is_a_normalizer_error_for_that_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.domain.normalizers.tastytrade as tasty

    def broken(data: object, received_at: object, as_of: object = None) -> BrokerBalanceRow:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(tasty, "balance", broken)
    batch = {"results": [{"type": "AccountBalance", "data": {}},
                         {"type": "CurrentPosition", "data": {"account-number": "5WT00001", "symbol": "SPY",
                                                              "quantity": "1"}}]}  # fmt: skip
    result = normalize_tastytrade(frame("tastytrade", batch))
    assert len(result.rows) == 1
    (letter,) = result.dead_letters
    assert letter.kind == NORMALIZER_ERROR
    assert letter.reason == "results 1: normalizer_error: ZeroDivisionError: boom"


def test_a_snapshot_position_without_a_usable_entry_keeps_its_stored_row() -> None:
    items = [{"symbol": "SPY", "quantity": "10"}, {"symbol": "QQQ", "quantity": "lots"}]
    snapshot = {"type": "snapshot", "account": "5WT00001", "as_of": "2026-11-20T14:30:00Z",
                "positions": {"data": {"items": items}}}  # fmt: skip
    result = normalize_tastytrade(frame("tastytrade", snapshot))
    marker = next(row for row in result.rows if isinstance(row, BrokerPositionsSnapshot))
    assert marker.symbols == ("SPY", "QQQ")  # QQQ is listed, so its stored row is not deleted as closed
    assert [row.symbol for row in result.rows if isinstance(row, BrokerPositionRow)] == ["SPY"]
    (letter,) = result.dead_letters
    assert letter.reason == "position 2: quantity: expected a number, got 'lots'"
