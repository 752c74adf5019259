"""The Polygon backfill's overlap rule and frames, on hand-made live and REST trades (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bridge.domain.backfill import (
    NS_PER_MS,
    ConnectionTrades,
    Edge,
    LiveTrades,
    PolygonBackfillNormalizer,
    backfill_frame_text,
    bounds_for,
    edge_of,
    missed_trades,
    quote_events,
    trade_events,
)
from bridge.domain.models import OptionsFlowRow, ReceivedFrame

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
MS = int(AT.timestamp() * 1000)
SYM = "O:SPY261218C00650000"


def live(t: int, x: int = 302, p: float = 1.25, s: int = 1, q: int = 1) -> dict[str, Any]:
    return {"ev": "T", "sym": SYM, "x": x, "p": p, "s": s, "c": [209], "t": t, "q": q}


def rest(ns: int, x: int = 302, p: float = 1.25, s: int = 1) -> dict[str, Any]:
    return {"conditions": [209], "exchange": x, "participant_timestamp": ns - 1000, "price": p,
            "sip_timestamp": ns, "size": s}  # fmt: skip


def test_a_connection_keeps_its_first_and_last_millisecond_per_contract_with_their_trades() -> None:
    trades = ConnectionTrades(AT)
    trades.observe([live(MS, s=1), live(MS, s=2), {"ev": "Q", "sym": SYM, "t": MS}])
    trades.observe([live(MS + 1, s=3), live(MS + 4, s=4), live(MS + 4, s=5), live(MS + 2, s=9)])
    assert trades.first_edge(SYM) == Edge(MS, [(302, 1.25, 1), (302, 1.25, 2)])
    assert trades.last[SYM] == [MS + 4, (302, 1.25, 4), (302, 1.25, 5)]  # a late print does not move it
    assert trades.first_ms == MS


def test_a_trade_both_sides_saw_is_kept_once_and_two_in_one_millisecond_are_never_merged() -> None:
    # live before the gap: two identical prints at MS (both seen); after it: one at MS + 10
    before = Edge(MS, [(302, 1.25, 1), (302, 1.25, 1)])
    after = Edge(MS + 10, [(303, 1.3, 2)])
    bounds = bounds_for(SYM, before, after, MS + 1, MS + 9)
    assert bounds is not None and (bounds.gte_ns, bounds.lt_ns) == (MS * NS_PER_MS, (MS + 11) * NS_PER_MS)
    results = [
        rest(MS * NS_PER_MS + 10), rest(MS * NS_PER_MS + 20),  # the two the stream delivered
        rest(MS * NS_PER_MS + 30),  # a third identical print in the same ms that the stream never sent
        rest((MS + 5) * NS_PER_MS),  # strictly inside the gap
        rest((MS + 10) * NS_PER_MS + 5, x=303, p=1.3, s=2),  # the first live trade after it
        rest((MS + 10) * NS_PER_MS + 1, x=303, p=1.31, s=2),  # same ms as it, but another trade
    ]  # fmt: skip
    missed = missed_trades(bounds, results)
    assert [r["sip_timestamp"] for r in missed] == [MS * NS_PER_MS + 30, (MS + 5) * NS_PER_MS,
                                                    (MS + 10) * NS_PER_MS + 1]  # fmt: skip


def test_prices_match_whatever_their_json_form_and_without_a_live_side_the_gap_time_bounds_it() -> None:
    before = Edge(MS, [(302, Decimal("1.20"), 1)])
    bounds = bounds_for(SYM, before, None, MS, MS + 3)
    assert bounds is not None and bounds.upper_ms == MS + 3
    results = [rest(MS * NS_PER_MS, p=1.2), rest((MS + 3) * NS_PER_MS + 999_999), rest((MS + 4) * NS_PER_MS)]
    assert [r["sip_timestamp"] for r in missed_trades(bounds, results)] == [(MS + 3) * NS_PER_MS + 999_999]
    assert bounds_for(SYM, Edge(MS + 5, []), Edge(MS + 4, []), MS, MS) is None  # the live sides overlap


def test_backfilled_trades_get_ids_of_their_own_and_sides_from_the_rest_quotes() -> None:
    normalizer = PolygonBackfillNormalizer()
    ns = (MS - 100) * NS_PER_MS
    trades = trade_events(SYM, [rest(ns + 7, p=1.30), rest(ns + 7, p=1.30), rest(ns + 9, p=1.10)])
    quotes = quote_events(SYM, [{"bid_price": 1.1, "ask_price": 1.3, "bid_exchange": 1, "ask_exchange": 2,
                                 "bid_size": 5, "ask_size": 5, "sip_timestamp": ns, "sequence_number": 1}])  # fmt: skip
    frame = ReceivedFrame("polygon", AT, backfill_frame_text("gap-1", SYM, trades, quotes))
    normalized = normalizer(frame)
    assert normalized.dead_letters == ()
    rows = [row for row in normalized.rows if isinstance(row, OptionsFlowRow)]
    assert [(row.side, row.bid, row.ask) for row in rows] == [("buy", Decimal("1.1"), Decimal("1.3"))] * 2 + [
        ("sell", Decimal("1.1"), Decimal("1.3"))
    ]
    assert len({row.id for row in rows}) == 3  # two prints in one nanosecond stay two
    assert normalizer.backfilled == 3 and len(normalizer.book) == 0  # the live book is untouched
    live_row = normalizer(ReceivedFrame("polygon", AT, orjson.dumps([live(MS - 100, p=1.3)]).decode())).rows[0]
    assert live_row.id not in {row.id for row in rows}
    assert orjson.loads(rows[0].raw)["rest"]["sip_timestamp"] == ns + 7
    assert normalizer(frame).rows == normalized.rows  # a replay of the journaled frame: the same rows


def test_without_quotes_a_backfilled_trade_has_no_side_and_a_broken_frame_is_a_dead_letter() -> None:
    normalizer = PolygonBackfillNormalizer()
    text = backfill_frame_text("gap-1", SYM, trade_events(SYM, [rest((MS - 5) * NS_PER_MS)]), [])
    (row,) = normalizer(ReceivedFrame("polygon", AT, text)).rows
    assert isinstance(row, OptionsFlowRow) and (row.side, row.bid) == ("unknown", None)
    broken = normalizer(ReceivedFrame("polygon", AT, '{"backfill": {"gap": 1}, "events": 3'))
    assert broken.rows == () and len(broken.dead_letters) == 1


def test_the_most_recently_traded_contracts_come_from_the_connections_before_the_current_one() -> None:
    trades = LiveTrades(max_contracts=4)
    trades.new_connection(AT).observe([live(MS + n) | {"sym": f"O:SPY261218C0065{n:04d}"} for n in range(5)])
    trades.new_connection(AT)
    assert trades.most_recent(2) == ["O:SPY261218C00650004", "O:SPY261218C00650003"]
    assert len(trades.history) == 4 and trades.last_edge("O:SPY261218C00650000") is None  # the oldest forgotten
    assert trades.most_recent(2, frozenset({"O:SPY261218C00650004"})) == [
        "O:SPY261218C00650003", "O:SPY261218C00650002"]  # fmt: skip


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([302, 303]), st.sampled_from([1.0, 1.05]), st.integers(1, 3)),
        max_size=40,
    ),
    st.integers(0, 40),
    st.integers(0, 40),
)
def test_every_trade_is_stored_exactly_once_whatever_the_stream_saw_around_the_gap(
    prints: list[tuple[int, int, float, int]], cut_before: int, cut_after: int
) -> None:
    """The vendor's tape; the stream saw a prefix and a suffix of it; backfill + stream = the tape, once."""
    tape = sorted(prints, key=lambda p: p[0])
    cut_after = max(cut_before, len(tape) - cut_after)
    seen_before, seen_after = tape[:cut_before], tape[cut_after:]
    connection = ConnectionTrades(AT)
    connection.observe([live(MS + t, x, p, s) for t, x, p, s in seen_before])
    following = ConnectionTrades(AT)
    following.observe([live(MS + t, x, p, s) for t, x, p, s in seen_after])
    start = MS + (seen_before[-1][0] if seen_before else 0)
    end = MS + (seen_after[0][0] if seen_after else 3)
    following_first = following.first_edge(SYM)
    bounds = bounds_for(SYM, edge_of(connection.last.get(SYM)), following_first, start, end)
    results = [rest((MS + t) * NS_PER_MS + n, x, p, s) for n, (t, x, p, s) in enumerate(tape)]
    missed = [] if bounds is None else missed_trades(bounds, results)
    stored = sorted([(t, x, p, s) for t, x, p, s in seen_before + seen_after] +
                    [(r["sip_timestamp"] // NS_PER_MS - MS, r["exchange"], r["price"], r["size"]) for r in missed])
    assert stored == sorted(tape)


JSONISH = st.none() | st.booleans() | st.text(max_size=3) | st.floats() | st.lists(st.integers(), max_size=2)
REST_TRADE = st.fixed_dictionaries(
    {},
    optional={
        "conditions": JSONISH,
        "exchange": st.sampled_from([302, 399, -1]) | JSONISH,
        "price": st.sampled_from([0.0, 1.25, -1.0]) | JSONISH,
        "size": st.sampled_from([1, 0, 2**70]) | JSONISH,
        "sip_timestamp": st.sampled_from([MS * NS_PER_MS - 5, (MS - 900) * NS_PER_MS, -1]) | JSONISH,
    },
)


@given(st.lists(REST_TRADE, max_size=8))
def test_whatever_rest_answers_each_trade_becomes_a_row_or_a_reason_and_nothing_raises(
    results: list[dict[str, Any]],
) -> None:
    bounds = bounds_for(SYM, None, None, MS - 1000, MS)
    assert bounds is not None
    missed = missed_trades(bounds, results)
    events = trade_events(SYM, missed, results)
    text = backfill_frame_text("gap", SYM, events, [])
    normalized = PolygonBackfillNormalizer()(ReceivedFrame("polygon", AT, text))
    letters = normalized.dead_letters
    if letters and letters[0].kind == "invalid_json":  # a non-finite number: the frame as a whole, with its text
        assert normalized.rows == () and letters[0].frame == text
        return
    reasons = sum(letter.reason.count("event ") for letter in letters)
    assert len(normalized.rows) + reasons >= len(events)
