"""The Developer Console format, message by message, as a user of the contract would send it."""

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest

from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    NewsEventRow,
    OptionsFlowRow,
    ReceivedFrame,
)
from bridge.domain.normalizers.console import normalize_console

RECEIVED = datetime(2026, 11, 20, 14, 30, 0, 123456, tzinfo=UTC)


def frame(payload: object) -> ReceivedFrame:
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return ReceivedFrame("console", RECEIVED, text)


TRADE = {
    "event_ts": "2026-11-20T14:29:59.5Z",
    "option_symbol": "SPXW251219C06000000",
    "size": 10,
    "trade_price": 12.5,
    "bid": 12.0,
    "ask": 12.5,
    "venue": "CBOE",
    "sequence": 7,
}


def test_a_trade_is_completed_from_its_option_symbol_and_quote() -> None:
    result = normalize_console(frame({"type": "options_flow", "data": TRADE}))
    assert result.dead_letters == ()
    (row,) = result.rows
    assert isinstance(row, OptionsFlowRow)
    assert row.symbol == "SPX"
    assert row.option_symbol == "SPXW251219C06000000"
    assert (row.strike, row.expiration, row.option_type) == (Decimal(6000), date(2025, 12, 19), "call")
    assert row.side == "buy"  # at the ask
    assert row.notional == Decimal("12500.0")
    assert row.event_ts == datetime(2026, 11, 20, 14, 29, 59, 500000, tzinfo=UTC)
    assert row.source == "dev_console"
    assert row.received_at == RECEIVED
    assert row.raw == TRADE  # no raw given: the data as sent, unknown keys included


def test_ids_are_deterministic_and_distinguish_trades() -> None:
    first = normalize_console(frame({"type": "options_flow", "data": TRADE})).rows[0]
    again = normalize_console(frame({"type": "options_flow", "data": TRADE})).rows[0]
    other = normalize_console(frame({"type": "options_flow", "data": {**TRADE, "sequence": 8}})).rows[0]
    assert first.id == again.id  # type: ignore[union-attr]
    assert first.id != other.id  # type: ignore[union-attr]


def test_epoch_milliseconds_and_explicit_columns_are_kept() -> None:
    data = {
        **TRADE,
        "event_ts": 1795185000000,
        "side": "SELL",
        "symbol": "SPXW",
        "source": "opra-x",
        "raw": {"vendor": "x"},
    }
    (row,) = normalize_console(frame({"type": "options_flow", "data": data})).rows
    assert isinstance(row, OptionsFlowRow)
    assert row.event_ts == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    assert (row.side, row.symbol, row.source) == ("sell", "SPXW", "opra-x")
    assert row.raw == {"vendor": "x", "sequence": 7}  # given raw plus unknown keys


def test_news_accounts_positions_and_balances() -> None:
    messages = [
        {
            "type": "news_events",
            "data": {
                "event_ts": "2026-11-20T14:00:00Z",
                "source": "benzinga",
                "headline": "Nestlé beats €",
                "symbol": ["NSRGY", "KO"],
                "body": "<p>HTML</p>",
                "importance": 3,
            },
        },
        {
            "type": "broker_accounts",
            "data": {"broker": "Tastytrade", "external_account_id": "5WT001", "label": "main"},
        },
        {
            "type": "broker_positions",
            "data": {
                "broker": "tastytrade",
                "external_account_id": "5WT001",
                "symbol": "SPY",
                "qty": "-3",
                "avg_price": "501.25",
                "updated_at": 1795183200000,
            },
        },
        {
            "type": "broker_balances",
            "data": {
                "broker": "tastytrade",
                "external_account_id": "5WT001",
                "cash": "1000.50",
                "equity": 25000,
                "updated_at": "2026-11-20T14:00:00+01:00",
            },
        },
    ]
    result = normalize_console(frame(messages))
    assert result.dead_letters == ()
    news, account, position, balance = result.rows
    assert isinstance(news, NewsEventRow)
    assert (news.headline, news.symbol, news.body, news.importance) == (
        "Nestlé beats €",
        "NSRGY,KO",
        "<p>HTML</p>",
        3,
    )
    ref = AccountRef("tastytrade", "5WT001")
    assert account == BrokerAccountRow(ref, "main")
    assert isinstance(position, BrokerPositionRow)
    assert (position.account, position.qty, position.avg_price) == (ref, Decimal(-3), Decimal("501.25"))
    assert isinstance(balance, BrokerBalanceRow)
    assert balance.updated_at == datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
    assert (balance.cash, balance.equity) == (Decimal("1000.50"), Decimal(25000))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("42", "expected a JSON object or array"),
        ({"type": "trades", "data": {}}, "unknown type 'trades'"),
        ({"type": "options_flow", "data": []}, "'data' must be an object"),
        (
            {"type": "options_flow", "data": {**TRADE, "option_symbol": None}},
            "option_symbol: expected a string",
        ),
        ({"type": "options_flow", "data": {**TRADE, "side": "sideways"}}, "side: 'sideways' is not one of"),
        ({"type": "options_flow", "data": {**TRADE, "size": "NaN"}}, "size: expected a finite number"),
        ({"type": "options_flow", "data": {**TRADE, "event_ts": "yesterday"}}, "not an ISO-8601 timestamp"),
        ({"type": "news_events", "data": {"source": "x"}}, "news_events: headline: expected a string"),
        (
            {
                "type": "broker_positions",
                "data": {"broker": "t", "external_account_id": "1", "symbol": "SPY", "qty": 1},
            },
            "updated_at: expected a timestamp, got null",
        ),
    ],
)
def test_every_rejection_says_why(payload: object, reason: str) -> None:
    result = normalize_console(frame(payload))
    assert result.rows == ()
    (letter,) = result.dead_letters
    assert reason in letter.reason
    assert letter.frame == frame(payload).text
    assert (letter.feed, letter.received_at) == ("console", RECEIVED)


def test_good_messages_survive_a_bad_neighbour() -> None:
    payload = [
        {"type": "options_flow", "data": TRADE},
        {"type": "nope"},
        {"type": "news_events", "data": {"headline": "h"}},
    ]
    result = normalize_console(frame(payload))
    assert [type(row) for row in result.rows] == [OptionsFlowRow, NewsEventRow]
    (letter,) = result.dead_letters
    assert letter.reason.startswith("message 1: unknown type")


def test_dead_letters_are_deterministic_per_frame() -> None:
    assert normalize_console(frame("{")).dead_letters == normalize_console(frame("{")).dead_letters
