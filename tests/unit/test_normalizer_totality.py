"""The console, Polygon and Benzinga normalizers are total: any input gives rows and dead letters, never an exception.

Hypothesis feeds them arbitrary JSON, and the vendors' own messages mutated one field at a time
(each field replaced by arbitrary JSON, or deleted), and checks that every message ends as a row or
a reason in a dead letter. Numbers are exact or dead-lettered with a reason, never rounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.domain.frames import NORMALIZER_ERROR
from bridge.domain.models import NewsEventRow, Normalized, OptionsFlowRow, ReceivedFrame
from bridge.domain.normalizers.benzinga import BenzingaNormalizer, normalize_benzinga
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.values import loads_exact

VENDORS = Path(__file__).parents[1] / "fixtures" / "vendors"
SPEC = json.loads((VENDORS / "massive" / "websocket_spec_examples.json").read_text())
TRADE, QUOTE = SPEC["options_trade"], SPEC["options_quote"]
V1 = json.loads((VENDORS / "benzinga" / "news_stream_v1_example.json").read_text())
NEWER = json.loads((VENDORS / "benzinga" / "news_stream_example.json").read_text())
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POLYGON_RECEIVED = EPOCH + timedelta(milliseconds=TRADE["t"] + 40)
V1_RECEIVED = datetime(2012, 2, 17, 21, 1, 41, tzinfo=UTC)
NEWER_RECEIVED = datetime(2024, 1, 1, 17, 35, 20, tzinfo=UTC)
CONSOLE_RECEIVED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CONSOLE_TRADE = {"type": "options_flow", "data": {"event_ts": "2026-11-20T14:29:59.5Z",
                 "option_symbol": "SPXW251219C06000000", "size": 10, "trade_price": 12.5, "bid": 12.0,
                 "ask": 12.5, "venue": "CBOE"}}  # fmt: skip
CONSOLE_NEWS = {"type": "news_events", "data": {"event_ts": "2026-11-20T14:00:00Z", "headline": "Fed holds",
                "symbol": ["SPY", "QQQ"], "importance": 3}}  # fmt: skip
CONSOLE_POSITION = {"type": "broker_positions", "data": {"broker": "tastytrade", "external_account_id": "5WT1",
                    "symbol": "SPY", "qty": "3", "updated_at": 1795185000000}}  # fmt: skip

# JSON as it may arrive: numbers beyond float and 64-bit range, long text, odd unicode, nesting.
NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(2**200), max_value=2**200).map(lambda i: orjson.Fragment(str(i))),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: orjson.Fragment(str(d))),
    st.sampled_from([orjson.Fragment(text) for text in ("1e400", "-1e400", "1e-400", "1e999999999", "-0", "1E+5")]),
)
ODD_TEXT = ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00", "Fri, 31 Dec 9999 23:59:59 -1200",
            "O:SPY251219C00650000", "T", "Q", "status", "Removed", "\x00"]  # fmt: skip
LONE_SURROGATE = orjson.Fragment('"\\ud800 and 12345678901234567"')  # valid JSON text, but no Unicode string
ODD = st.sampled_from([*ODD_TEXT, LONE_SURROGATE])
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40), ODD)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
DEEP = st.integers(min_value=256, max_value=1100).map(lambda depth: "[" * depth + "]" * depth)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def text_of(value: object) -> str:
    return orjson.dumps(value).decode()


def mutations(message: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a message (nested objects included): the fields a mutation may replace or delete."""
    for key, value in message.items():
        yield (*path, key)
        if isinstance(value, dict):
            yield from mutations(value, (*path, key))


def mutated(message: dict[str, Any], path: tuple[str, ...], replacement: object, delete: bool) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return copy


def reasons(result: Normalized) -> list[str]:
    return [reason for letter in result.dead_letters for reason in letter.reason.split("; ")]


def assert_well_formed(result: Normalized) -> None:
    """Rows have the types their columns need; every dead letter says why, ``normalizer_error`` ones as such."""
    for letter in result.dead_letters:
        assert letter.reason
        if letter.kind == NORMALIZER_ERROR:
            assert all(re.search(r"normalizer_error: \w+: ", reason) for reason in reasons(Normalized((), (letter,))))
    for row in result.rows:
        if isinstance(row, OptionsFlowRow):
            assert isinstance(row.size, Decimal) and row.size > 0
            assert row.raw is not None
            orjson.loads(row.raw if isinstance(row.raw, str) else orjson.dumps(row.raw))  # readable back


# -- arbitrary JSON ------------------------------------------------------------------------------------


def normalize_any(normalizer: Callable[[ReceivedFrame], Normalized], feed: str, text: str) -> Normalized:
    result = normalizer(ReceivedFrame(feed, CONSOLE_RECEIVED, text))
    assert_well_formed(result)
    return result


@FAST
@given(value=JSON)
def test_console_never_raises_on_arbitrary_json(value: object) -> None:
    for text in (text_of(value), text_of({"type": "options_flow", "data": value}), text_of([CONSOLE_NEWS, value])):
        normalize_any(normalize_console, "console", text)


@FAST
@given(value=JSON)
def test_polygon_never_raises_on_arbitrary_json(value: object) -> None:
    normalizer = PolygonNormalizer()
    for text in (text_of(value), text_of([value]), text_of([{"ev": "T", **v} if isinstance(v := value, dict) else v])):
        normalize_any(normalizer, "polygon", text)


@FAST
@given(value=JSON)
def test_benzinga_never_raises_on_arbitrary_json(value: object) -> None:
    for text in (text_of(value), text_of({"kind": "News/v1", "data": value}), text_of({"data": {"content": value}})):
        normalize_any(normalize_benzinga, "benzinga", text)


@FAST
@given(text=DEEP)
def test_deep_nesting_is_a_reason_not_a_crash(text: str) -> None:
    inner = text
    for normalizer, feed, frame_text in [
        (normalize_console, "console", f'{{"type":"news_events","data":{{"headline":"h","x":{inner}}}}}'),
        (PolygonNormalizer(), "polygon", f'[{{"ev":"T","sym":"O:SPY251219C00650000","p":1,"s":1,"t":1,"z":{inner}}}]'),
        (
            normalize_benzinga,
            "benzinga",
            f'{{"data":{{"action":"Created","content":{{"id":1,"title":"t","x":{inner}}}}}}}',
        ),
    ]:
        result = normalize_any(normalizer, feed, frame_text)
        assert len(result.dead_letters) == 1


@FAST
@given(text=st.text(max_size=200))
def test_any_text_at_all(text: str) -> None:
    normalize_any(normalize_console, "console", text)
    normalize_any(PolygonNormalizer(), "polygon", text)
    normalize_any(normalize_benzinga, "benzinga", text)


# -- vendor messages mutated field by field ---------------------------------------------------------------


def polygon_accounting(events: list[Any], result: Normalized, quotes: int) -> None:
    """Every event is a row, a quote taken into the book, a status, or a reason naming it."""
    named = {int(match) for reason in reasons(result) for match in re.findall(r"^event (\d+): ", reason)}
    statuses = sum(1 for event in events if isinstance(event, dict) and event.get("ev") == "status")
    assert len(result.rows) + quotes + statuses + len(named) == len(events)


@FAST
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_polygon_spec_events_mutated_field_by_field(data: st.DataObject, replacement: object, delete: bool) -> None:
    base = data.draw(st.sampled_from([TRADE, QUOTE]))
    path = data.draw(st.sampled_from(list(mutations(base))))
    events = [QUOTE, mutated(base, path, replacement, delete), TRADE]
    normalizer = PolygonNormalizer()
    result = normalizer(ReceivedFrame("polygon", POLYGON_RECEIVED, text_of(events)))
    assert_well_formed(result)
    polygon_accounting(events, result, normalizer.quotes)
    assert len(result.rows) >= 1  # the untouched trade is stored whatever its neighbour holds


@FAST
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_benzinga_vendor_messages_mutated_field_by_field(
    data: st.DataObject, replacement: object, delete: bool
) -> None:
    base, received = data.draw(st.sampled_from([(V1, V1_RECEIVED), (NEWER, NEWER_RECEIVED)]))
    path = data.draw(st.sampled_from(list(mutations(base))))
    text = text_of(mutated(base, path, replacement, delete))
    result = normalize_benzinga(ReceivedFrame("benzinga", received, text))
    assert_well_formed(result)
    assert len(result.rows) + len(result.dead_letters) == 1  # one message: a row or a dead letter
    normalizer = BenzingaNormalizer()
    normalizer(ReceivedFrame("benzinga", received, text_of(base)))
    again = normalizer(ReceivedFrame("benzinga", received, text))  # the stateful form, after the original
    assert len(again.rows) + len(again.dead_letters) + normalizer.superseded == 1


@FAST
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_console_messages_mutated_field_by_field(data: st.DataObject, replacement: object, delete: bool) -> None:
    base = data.draw(st.sampled_from([CONSOLE_TRADE, CONSOLE_NEWS, CONSOLE_POSITION]))
    path = data.draw(st.sampled_from(list(mutations(base))))
    messages = [CONSOLE_NEWS, mutated(base, path, replacement, delete), CONSOLE_POSITION]
    result = normalize_console(ReceivedFrame("console", CONSOLE_RECEIVED, text_of(messages)))
    assert_well_formed(result)
    named = {int(match) for reason in reasons(result) for match in re.findall(r"^message (\d+): ", reason)}
    assert len(result.rows) + len(named) == 3  # each message a row or a reason naming it
    assert {0, 2}.isdisjoint(named)  # its untouched neighbours are stored


# -- the crashers of old, and exact numbers ----------------------------------------------------------------


def polygon_trade_text(**fields: str) -> str:
    event = {"ev": '"T"', "sym": '"O:SPY251219C00650000"', "x": "302", "p": "1.5", "s": "1", "t": str(TRADE["t"])}
    event.update(fields)
    return "[" + "{" + ",".join(f'"{key}":{value}' for key, value in event.items()) + "}" + "]"


def test_a_size_beyond_64_bits_is_stored_exactly() -> None:
    (row,) = PolygonNormalizer()(ReceivedFrame("polygon", POLYGON_RECEIVED, polygon_trade_text(s=str(2**64 + 1)))).rows
    assert isinstance(row, OptionsFlowRow)
    assert row.size == Decimal(18446744073709551617)  # not 18446744073709552000
    assert row.notional == Decimal("1.5") * 18446744073709551617 * 100
    assert row.raw is not None and '"s":18446744073709551617' in row.raw


def test_long_prices_keep_every_digit_in_columns_and_raw() -> None:
    price = "1.00000000000000000001"  # a float would make this 1.0
    (row,) = PolygonNormalizer()(ReceivedFrame("polygon", POLYGON_RECEIVED, polygon_trade_text(p=price, s="3"))).rows
    assert isinstance(row, OptionsFlowRow)
    assert (row.trade_price, row.notional) == (Decimal(price), Decimal("300.00000000000000000300"))
    assert row.raw is not None and f'"p":{price}' in row.raw


def test_console_and_benzinga_numbers_are_exact_in_columns_and_raw() -> None:
    data = {**CONSOLE_TRADE["data"], "size": 2**64 + 1}
    text = text_of({"type": "options_flow", "data": {**data, "size": orjson.Fragment(str(2**64 + 1))}})
    (row,) = normalize_console(ReceivedFrame("console", CONSOLE_RECEIVED, text)).rows
    assert isinstance(row, OptionsFlowRow)
    assert row.size == Decimal(2**64 + 1) and row.notional == Decimal("12.5") * (2**64 + 1) * 100
    assert '"size":18446744073709551617' in orjson.dumps(row.raw).decode()
    news = {**V1, "data": {**V1["data"], "content": {**V1["data"]["content"], "revision_id": 2**70}}}
    (article,) = normalize_benzinga(ReceivedFrame("benzinga", V1_RECEIVED, json.dumps(news))).rows
    assert isinstance(article, NewsEventRow)
    assert f'"revision_id":{2**70}' in orjson.dumps(article.raw).decode()


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("1e999999", "s: Decimal('1E+999999') is out of range"),
        ('"1e999999"', "s: '1e999999' is out of range"),
        ("1e-999999", "s: Decimal('1E-999999') is out of range"),
        ("1e1000", "s: Decimal('1E+1000') is out of range"),
        ("1e400", "raw: the number 1E+400 is beyond what JSON readers take (about 1e308)"),
    ],
)
def test_numbers_beyond_the_exact_range_are_dead_lettered_with_the_reason(size: str, reason: str) -> None:
    result = PolygonNormalizer()(ReceivedFrame("polygon", POLYGON_RECEIVED, polygon_trade_text(s=size)))
    assert result.rows == ()
    (letter,) = result.dead_letters
    assert letter.reason.startswith(f"event 0: {reason}") or reason in letter.reason, letter.reason
    assert letter.kind == "invalid_message"


def test_the_known_crashers_of_old_are_reasons() -> None:
    deep = "[" * 500 + "]" * 500
    year = "9999-12-31T23:00:00-05:00"
    cases = [
        (normalize_console, "console", f'{{"type":"options_flow","data":{{"option_symbol":"SPY251219C00650000",'
         f'"size":1,"event_ts":"2026-11-20T14:29:00Z","x":{deep}}}}}', "nested more than 254 levels"),
        (normalize_console, "console", '{"type":"options_flow","data":{"option_symbol":"SPY251219C00650000",'
         '"size":"1e999999","trade_price":1,"event_ts":"2026-11-20T14:29:00Z"}}', "size: '1e999999' is out of range"),
        (normalize_console, "console", f'{{"type":"news_events","data":{{"headline":"h","event_ts":"{year}"}}}}',
         "outside the timestamps' range"),
        (normalize_benzinga, "benzinga", f'{{"data":{{"action":"Created","content":{{"id":1,"title":"t",'
         f'"created_at":"{year}"}}}}}}', "outside the timestamps' range"),
        (normalize_benzinga, "benzinga", f'{{"data":{{"action":"Created","content":{{"id":1,"title":"t",'
         f'"x":{deep}}}}}}}', "nested more than 254 levels"),
        (PolygonNormalizer(), "polygon", polygon_trade_text(z=deep), "nested more than 254 levels"),
    ]  # fmt: skip
    for normalizer, feed, text, reason in cases:
        result = normalizer(ReceivedFrame(feed, CONSOLE_RECEIVED if feed != "polygon" else POLYGON_RECEIVED, text))
        (letter,) = result.dead_letters
        assert reason in letter.reason, (feed, letter.reason)
        assert letter.kind == "invalid_message"


def test_an_unforeseen_failure_costs_only_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one event's path is that event's ``normalizer_error``; the frame's other events go on."""
    normalizer = PolygonNormalizer()
    original = PolygonNormalizer._trade

    def flaky(self: PolygonNormalizer, event: dict[str, Any], *args: Any) -> OptionsFlowRow:
        if event.get("q") == 2:
            raise KeyError("boom")
        return original(self, event, *args)

    monkeypatch.setattr(PolygonNormalizer, "_trade", flaky)
    events = [{**TRADE, "q": 1}, {**TRADE, "q": 2}, {**TRADE, "q": 3}, {"ev": "AM"}]
    result = normalizer(ReceivedFrame("polygon", POLYGON_RECEIVED, text_of(events)))
    assert len(result.rows) == 2
    refused, failed = result.dead_letters
    assert (refused.kind, refused.reason) == (
        "invalid_message",
        "event 3: event type 'AM' is not stored by this bridge",
    )
    assert (failed.kind, failed.reason) == (NORMALIZER_ERROR, "event 1: normalizer_error: KeyError: 'boom'")
    assert refused.id != failed.id


def test_loads_exact_reads_ordinary_frames_as_orjson_does() -> None:
    text = text_of([TRADE, QUOTE, {"n": 123456789012345, "f": 0.1}])
    assert loads_exact(text) == orjson.loads(text)
    assert loads_exact('{"a": 1.50, "b": 12345678901234567}') == {"a": Decimal("1.50"), "b": 12345678901234567}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18446744073709551617", Decimal(18446744073709551617)),
        ("-9223372036854775809", Decimal(-9223372036854775809)),
        ("1.00000000000000000001", Decimal("1.00000000000000000001")),
        ("12345678.123456789", Decimal("12345678.123456789")),
        ("1e-400", Decimal("1E-400")),
        ("1e400", Decimal("1E+400")),
        ("1.2345678901234567e5", Decimal("123456.78901234567")),
    ],
)
def test_loads_exact_keeps_what_a_float_would_round(text: str, value: Decimal) -> None:
    assert loads_exact(f'{{"n":{text}}}') == {"n": value}
