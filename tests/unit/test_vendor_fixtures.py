"""Every broker normalizer over the vendors' own message shapes (tests/fixtures/vendors), asserting
what each field means."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    Normalized,
    ReceivedFrame,
)
from bridge.domain.normalizers.schwab import normalize_schwab
from bridge.domain.normalizers.tastytrade import normalize_tastytrade
from bridge.domain.normalizers.tradier import normalize_tradier

VENDORS = Path(__file__).parents[1] / "fixtures" / "vendors"
RECEIVED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
AS_OF = "2026-11-20T14:30:00+00:00"


def load(name: str) -> Any:
    return orjson.loads((VENDORS / name).read_bytes())


def run(normalizer: Any, feed: str, message: object) -> Normalized:
    return normalizer(ReceivedFrame(feed, RECEIVED, orjson.dumps(message).decode()))  # type: ignore[no-any-return]


def positions(result: Normalized) -> dict[str, BrokerPositionRow]:
    return {row.symbol: row for row in result.rows if isinstance(row, BrokerPositionRow)}


def tasty_snapshot(positions_body: object, balances_body: object | None = None) -> dict[str, Any]:
    return {"type": "snapshot", "account": "5WT00001", "as_of": AS_OF, "positions": positions_body,
            "balances": balances_body or load("tastytrade/balances.json")}  # fmt: skip


def test_tastytrade_snapshot_keeps_a_position_held_for_over_a_year_and_values_it_at_the_mark() -> None:
    result = run(normalize_tastytrade, "tastytrade", tasty_snapshot(load("tastytrade/positions_include_marks.json")))
    assert result.dead_letters == ()
    held = positions(result)
    aapl, put = held["AAPL"], held["SPY   261218P00550000"]
    assert (aapl.qty, aapl.avg_price, aapl.market_value) == (Decimal(100), Decimal("150.12"), Decimal("22910.0"))
    assert aapl.updated_at == RECEIVED  # the snapshot's time, though updated-at is 2025-05-12
    # short two contracts at a mark of 4.10: -2 x 4.10 x 100
    assert (put.qty, put.avg_price, put.market_value) == (Decimal(-2), Decimal("4.35"), Decimal("-820.0"))
    (snapshot,) = [row for row in result.rows if isinstance(row, BrokerPositionsSnapshot)]
    assert set(snapshot.symbols) == {"AAPL", "SPY   261218P00550000"}
    (balance,) = [row for row in result.rows if isinstance(row, BrokerBalanceRow)]
    assert (balance.cash, balance.buying_power, balance.maintenance_margin, balance.equity) == (
        Decimal("12500.35"), Decimal("18744.7"), Decimal("7820.0"), Decimal("34590.35"))  # fmt: skip


def test_tastytrade_a_position_opened_today_without_a_mark_has_no_value_rather_than_zero() -> None:
    result = run(normalize_tastytrade, "tastytrade",
                 tasty_snapshot(load("tastytrade/positions_opened_today_no_marks.json")))  # fmt: skip
    qqq = positions(result)["QQQ"]
    assert (qqq.qty, qqq.avg_price, qqq.market_value) == (Decimal(10), Decimal("505.2"), None)


def test_tastytrade_a_results_batch_is_handled_element_by_element() -> None:
    result = run(normalize_tastytrade, "tastytrade", load("tastytrade/streamer_results_batch.json"))
    assert result.dead_letters == ()
    account = AccountRef("tastytrade", "5WT00001")
    (position,) = positions(result).values()
    assert (position.account, position.symbol, position.qty) == (account, "MSFT", Decimal(5))
    assert position.market_value == Decimal("2060.5")  # 5 x the 412.10 close
    (balance,) = [row for row in result.rows if isinstance(row, BrokerBalanceRow)]
    assert (balance.cash, balance.equity) == (Decimal("10440.35"), Decimal("34602.85"))
    assert len(result.rows) == 2  # the Order holds no state


def test_tastytrade_one_bad_element_of_a_batch_costs_only_itself() -> None:
    batch = load("tastytrade/streamer_results_batch.json")
    batch["results"].insert(1, {"type": "CurrentPosition", "data": {"symbol": "X", "quantity": "NaN-ish"}})
    batch["results"].append("not an object")
    result = run(normalize_tastytrade, "tastytrade", batch)
    assert len(result.rows) == 2
    (letter,) = result.dead_letters
    assert letter.reason == "results 2: quantity: expected a number, got 'NaN-ish'; results 5: expected a JSON object"


def test_tastytrade_streamer_replies_hold_no_state() -> None:
    for name in ("streamer_connect_ok.json", "streamer_heartbeat_ok.json"):
        assert run(normalize_tastytrade, "tastytrade", load(f"tastytrade/{name}")) == Normalized()


def tradier_snapshot(positions_body: object, balances_body: object) -> dict[str, Any]:
    return {"type": "snapshot", "account": "VA00000000", "as_of": AS_OF, "positions": positions_body,
            "balances": balances_body}  # fmt: skip


def test_tradier_avg_price_is_per_share_for_stocks_and_options() -> None:
    result = run(normalize_tradier, "tradier",
                 tradier_snapshot(load("tradier/positions.json"), load("tradier/balances_margin.json")))  # fmt: skip
    assert result.dead_letters == ()
    held = positions(result)
    assert held["AAPL"].avg_price == Decimal("207.01")
    assert held["AMZN"].avg_price == Decimal("1870.70")
    # five calls that cost 625.00 in all: 1.25 a share, as tastytrade and Schwab would state it
    assert (held["SPY261218C00650000"].qty, held["SPY261218C00650000"].avg_price) == (Decimal(5), Decimal("1.25"))
    assert (held["SPY261218P00550000"].qty, held["SPY261218P00550000"].avg_price) == (Decimal(-2), Decimal("1.9"))
    (balance,) = [row for row in result.rows if isinstance(row, BrokerBalanceRow)]
    assert (balance.cash, balance.buying_power, balance.maintenance_margin, balance.equity) == (
        Decimal("6.363860000000000000000000E+3"), Decimal("12727.7200000000000000000"),
        Decimal("2557.00000000000000000000"), Decimal("17798.360000000000000000000"))  # fmt: skip


def test_tradier_list_encodings_and_a_cash_account() -> None:
    one = run(normalize_tradier, "tradier",
              tradier_snapshot(load("tradier/positions_one.json"), load("tradier/balances_cash.json")))  # fmt: skip
    assert list(positions(one)) == ["AAPL"]
    (balance,) = [row for row in one.rows if isinstance(row, BrokerBalanceRow)]
    assert (balance.cash, balance.buying_power, balance.equity) == (Decimal(10000), Decimal(9800), Decimal("10300.5"))
    none = run(normalize_tradier, "tradier", tradier_snapshot(load("tradier/positions_none.json"), None))
    assert [type(row) for row in none.rows] == [BrokerAccountRow, BrokerPositionsSnapshot]
    for name in ("account_event_order_filled.json", "account_event_heartbeat.json"):
        assert run(normalize_tradier, "tradier", load(f"tradier/{name}")) == Normalized()


def test_schwab_margin_and_cash_accounts() -> None:
    snapshot = {"type": "snapshot", "as_of": AS_OF, "accounts": load("schwab/accounts_with_positions.json")}
    result = run(normalize_schwab, "schwab", snapshot)
    assert result.dead_letters == ()
    balances = {row.account.external_account_id: row for row in result.rows if isinstance(row, BrokerBalanceRow)}
    margin, cash = balances["87654321"], balances["12345678"]
    assert (margin.cash, margin.buying_power, margin.maintenance_margin, margin.equity) == (
        Decimal("4137.5"), Decimal("15211.0"), Decimal("16673.6"), Decimal("22374.5"))  # fmt: skip
    # a cash account has no buyingPower: its buying power is cashAvailableForTrading
    assert (cash.cash, cash.buying_power, cash.maintenance_margin, cash.equity) == (
        Decimal("5000.0"), Decimal("4750.0"), None, Decimal("9120.0"))  # fmt: skip
    held = positions(result)
    put = held["SPY   261218P00550000"]
    assert (put.qty, put.avg_price, put.market_value) == (Decimal("-3.0"), Decimal("2.15"), Decimal("-675.0"))
    assert (held["AAPL"].qty, held["MSFT"].qty) == (Decimal("100.0"), Decimal("10.0"))


def test_schwab_streamer_frames_hold_no_state() -> None:
    for name in ("streamer_login_ok.json", "streamer_acct_activity.json", "streamer_heartbeat.json"):
        assert run(normalize_schwab, "schwab", load(f"schwab/{name}")) == Normalized()
