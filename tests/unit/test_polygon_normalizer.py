"""Polygon/Massive option events → options_flow rows, with the NBBO side rule at its boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.domain.models import OptionsFlowRow, ReceivedFrame
from bridge.domain.nbbo import NbboBook
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.quote_subscriptions import QuoteSubscriptions
from bridge.domain.side import infer_side, usable_quote

T = 1795185000000  # 2026-11-20T14:30:00Z in Unix ms
SYM = "O:SPY251219C00650000"
RECEIVED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def frame(*events: object) -> ReceivedFrame:
    return ReceivedFrame("polygon", RECEIVED, orjson.dumps(list(events)).decode())


def quote(bp: float, ap: float, t: int = T, sym: str = SYM) -> dict[str, object]:
    return {"ev": "Q", "sym": sym, "bx": 302, "ax": 313, "bp": bp, "ap": ap, "bs": 10, "as": 12, "t": t, "q": 1}


def trade(p: float, t: int = T + 100, sym: str = SYM, x: int = 302, q: int = 7, s: int = 3) -> dict[str, object]:
    return {"ev": "T", "sym": sym, "x": x, "p": p, "s": s, "c": [209], "t": t, "q": q}


def test_a_trade_becomes_a_complete_row() -> None:
    normalizer = PolygonNormalizer()
    (row,) = normalizer(frame(quote(1.50, 1.60), trade(1.60))).rows
    assert isinstance(row, OptionsFlowRow)
    assert (row.symbol, row.option_symbol, row.option_type) == ("SPY", "SPY251219C00650000", "call")
    assert (row.strike, row.expiration) == (Decimal(650), date(2025, 12, 19))
    assert (row.trade_price, row.size, row.notional) == (Decimal("1.6"), Decimal(3), Decimal("480.0"))
    assert (row.bid, row.ask, row.side) == (Decimal("1.5"), Decimal("1.6"), "buy")
    assert row.event_ts == datetime(2026, 11, 20, 14, 30, 0, 100000, tzinfo=UTC)
    assert (row.venue, row.source) == ("XCBO", "polygon")
    assert orjson.loads(row.raw) == trade(1.60)  # type: ignore[arg-type]  # the event's JSON text


@pytest.mark.parametrize(
    ("price", "side"),
    [(1.60, "buy"), (1.70, "buy"), (1.56, "buy"), (1.55, "unknown"), (1.54, "sell"), (1.50, "sell"), (1.40, "sell")],
)
def test_side_at_every_boundary_of_the_quote(price: float, side: str) -> None:
    (row,) = PolygonNormalizer()(frame(quote(1.50, 1.60), trade(price))).rows
    assert row.side == side  # type: ignore[union-attr]


PRICES = st.one_of(
    st.integers(min_value=0, max_value=5000).map(lambda cents: cents / 100),  # what OPRA sends
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=50),
)


@given(bid=PRICES, ask=PRICES, price=PRICES)
def test_the_side_of_float_prices_is_the_decimal_rule(bid: float, ask: float, price: float) -> None:
    """A float price counts as the Decimal of its shortest repr, and the side rule is stated in Decimal."""
    (row,) = PolygonNormalizer()(frame(quote(bid, ask), trade(price))).rows
    as_sent = [Decimal(repr(value)) for value in (price, bid, ask)]
    assert row.side == infer_side(*as_sent)  # type: ignore[union-attr]
    quote_used = (as_sent[1], as_sent[2]) if usable_quote(as_sent[1], as_sent[2]) else (None, None)
    assert (row.bid, row.ask) == quote_used  # type: ignore[union-attr]


def test_wide_or_odd_prices_keep_their_exact_midpoint() -> None:
    (row,) = PolygonNormalizer()(frame(quote(0.1, 0.2), trade(0.15))).rows
    assert row.side == "unknown"  # type: ignore[union-attr]  # in binary floats 0.15 < (0.1 + 0.2) / 2


@pytest.mark.parametrize(
    ("events", "why"),
    [
        ([trade(1.6)], "no quote at all"),
        ([quote(1.5, 1.6, t=T - 10_000), trade(1.6, t=T)], "a quote older than the maximum age"),
        ([quote(1.7, 1.6), trade(1.6)], "a crossed quote"),
        ([quote(1.5, 1.6, t=T + 500), trade(1.6, t=T)], "a quote stamped after the trade"),
        ([quote(1.5, 1.6, sym="O:SPY251219P00650000"), trade(1.6)], "a quote for another contract"),
    ],
)
def test_no_usable_quote_means_unknown_side_and_no_bid_ask(events: list[object], why: str) -> None:
    normalizer = PolygonNormalizer(quote_max_age_ms=5000)
    (row,) = normalizer(frame(*events)).rows
    assert (row.side, row.bid, row.ask) == ("unknown", None, None), why  # type: ignore[union-attr]
    assert normalizer.trades_without_quote == 1


def test_the_latest_quote_before_the_trade_counts() -> None:
    normalizer = PolygonNormalizer()
    rows = normalizer(frame(quote(1.0, 1.1), trade(1.1, t=T + 1), quote(2.0, 2.1, t=T + 2), trade(2.0, t=T + 3))).rows
    assert [(r.bid, r.side) for r in rows] == [(Decimal("1.0"), "buy"), (Decimal("2.0"), "sell")]  # type: ignore[union-attr]


def test_ids_identify_the_trade_and_repeat_on_replay() -> None:
    a = PolygonNormalizer()(frame(trade(1.6, q=1))).rows[0]
    b = PolygonNormalizer()(frame(trade(1.6, q=1))).rows[0]
    c = PolygonNormalizer()(frame(trade(1.6, q=2))).rows[0]
    assert a.id == b.id != c.id  # type: ignore[union-attr]


def test_index_roots_and_unknown_exchanges() -> None:
    (row,) = PolygonNormalizer()(frame(trade(40.0, sym="O:SPXW251219P06000000", x=399))).rows
    assert (row.symbol, row.venue) == ("SPX", "399")  # type: ignore[union-attr]


def test_status_events_are_protocol_and_bad_events_are_dead_lettered_with_the_rest_kept() -> None:
    status = {"ev": "status", "status": "success", "message": "subscribed to: T.*"}
    result = PolygonNormalizer()(
        frame(
            status,
            trade(1.0),
            {"ev": "AM", "sym": SYM},
            trade(1.0, sym="O:NOPE"),
            {"ev": "T", "sym": SYM, "x": 302, "p": 1.0, "s": 1, "t": "soon"},
            trade(1.1, q=9),
        )
    )
    assert len(result.rows) == 2
    (letter,) = result.dead_letters
    assert "event 2: event type 'AM' is not stored by this bridge" in letter.reason
    assert "event 3: 'O:NOPE' is not an OCC option symbol" in letter.reason
    assert "event 4: t: expected Unix milliseconds as an integer, got 'soon'" in letter.reason


@pytest.mark.parametrize("text", ['"T"', "3", "null", "true"])
def test_a_frame_that_is_not_an_array_is_dead_lettered(text: str) -> None:
    result = PolygonNormalizer()(ReceivedFrame("polygon", RECEIVED, text))
    assert result.dead_letters[0].reason == "expected a JSON array of events"


def test_a_lone_event_object_is_a_frame_of_one_event() -> None:
    """The vendor's spec shows each event as a bare object; the wire wraps them in arrays."""
    (row,) = PolygonNormalizer()(ReceivedFrame("polygon", RECEIVED, orjson.dumps(trade(1.25)).decode())).rows
    assert row.trade_price == Decimal("1.25")  # type: ignore[union-attr]
    result = PolygonNormalizer()(ReceivedFrame("polygon", RECEIVED, '{"ev": "T"}'))
    assert result.dead_letters[0].reason == "event 0: sym: expected a string, got null"


def test_a_late_older_quote_never_replaces_a_newer_one() -> None:
    book = NbboBook(max_idle_ms=1000, max_contracts=10)
    book.update("C4", Decimal(1), Decimal(2), 5000)
    book.update("C4", Decimal(9), Decimal(9), 10)  # older: ignored
    assert book.usable("C4", 5000, 0) == (Decimal(1), Decimal(2), 5000)
    book.update("C0", Decimal(1), Decimal(2), 5600)  # half the idle time on: C4 is now in the older generation
    book.update("C4", Decimal(9), Decimal(9), 10)
    assert book.usable("C4", 5000, 0) == (Decimal(1), Decimal(2), 5000)
    assert len(book) == 2


def test_quote_subscriptions_keep_pinned_and_drop_the_least_recently_traded() -> None:
    subscriptions = QuoteSubscriptions(limit=3, pinned=frozenset({"P"}))
    assert subscriptions.on_trades(["A", "B"]) == (["A", "B"], [])
    assert subscriptions.on_trades(["A", "P"]) == ([], [])  # A is now the most recent
    assert subscriptions.on_trades(["C"]) == (["C"], ["B"])
    assert subscriptions.current == ["P", "A", "C"]
    assert subscriptions.on_trades(["D", "E"]) == (["D", "E"], ["A", "C"])
    assert len(subscriptions.current) <= 3
    with pytest.raises(ValueError, match="exceed the limit"):
        QuoteSubscriptions(limit=1, pinned=frozenset({"X", "Y"}))


def test_idle_contracts_leave_the_book_as_event_time_passes() -> None:
    book = NbboBook(max_idle_ms=1000, max_contracts=100)
    for contract, at_ms in (("C1", 0), ("C2", 800), ("C3", 1500)):
        book.update(contract, Decimal(1), Decimal(2), at_ms)
    assert book.usable("C1", 1500, 10_000) is None and book.evicted == 1  # C1: idle 1500 ms
    assert book.usable("C2", 1500, 10_000) is not None  # C2: idle 700 ms
    book.update("C4", Decimal(1), Decimal(2), 2400)
    assert book.usable("C2", 2400, 10_000) is None  # C2: idle 1600 ms
    assert book.usable("C3", 2400, 10_000) is not None and len(book) == 2


def test_the_book_limits_come_from_the_environment() -> None:
    from bridge.app.service import normalizers
    from bridge.app.settings import load_settings

    settings = load_settings({"BRIDGE_NBBO_MAX_IDLE_S": "2.5", "BRIDGE_NBBO_MAX_CONTRACTS": "10"})
    polygon = normalizers(settings)["polygon"]
    assert isinstance(polygon, PolygonNormalizer)
    assert (polygon.book.max_idle_ms, polygon.book.max_contracts) == (2500, 10)
