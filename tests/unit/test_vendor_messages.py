"""The normalizers against the vendors' own example messages (tests/fixtures/vendors, sources in its README).

Each test asserts what the vendor documents the message to mean. Receive times are set relative to
the message's own time (the test's clock), so no test depends on today's date.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bridge.domain.ids import stable_id
from bridge.domain.models import NewsEventRow, OptionsFlowRow, ReceivedFrame
from bridge.domain.normalizers.benzinga import normalize_benzinga
from bridge.domain.normalizers.polygon import PolygonNormalizer

VENDORS = Path(__file__).parents[1] / "fixtures" / "vendors"
MASSIVE: dict[str, Any] = json.loads((VENDORS / "massive" / "websocket_spec_examples.json").read_text())
MOCK_FRAMES: list[str] = json.loads((VENDORS / "massive" / "mock_server_frames.json").read_text())


def benzinga_text(name: str) -> str:
    return (VENDORS / "benzinga" / name).read_text()


def benzinga(name: str) -> dict[str, Any]:
    return json.loads(benzinga_text(name))  # type: ignore[no-any-return]


def at_ms(ms: int, after: timedelta = timedelta(milliseconds=40)) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms) + after


def polygon_frame(received: datetime, *events: object) -> ReceivedFrame:
    return ReceivedFrame("polygon", received, orjson.dumps(list(events)).decode())


# -- Massive / Polygon ----------------------------------------------------------------------------


def test_the_spec_trade_example_is_the_documented_trade() -> None:
    trade = MASSIVE["options_trade"]
    received = at_ms(trade["t"])
    result = PolygonNormalizer()(polygon_frame(received, trade))
    assert result.dead_letters == ()
    (row,) = result.rows
    assert isinstance(row, OptionsFlowRow)
    assert (row.symbol, row.option_symbol) == ("AMC", "AMC210827C00037000")
    assert (row.expiration, row.option_type, row.strike) == (date(2021, 8, 27), "call", Decimal(37))
    assert (row.trade_price, row.size, row.notional) == (Decimal("1.54"), Decimal(1), Decimal("154.00"))
    assert row.event_ts == datetime(2021, 8, 24, 15, 57, 56, 333000, tzinfo=UTC)  # "t": Unix ms
    assert row.venue == "65"  # an exchange id the reference table does not list is kept as the id
    assert (row.side, row.bid, row.ask) == ("unknown", None, None)  # no quote before it
    assert row.id == stable_id("polygon", "O:AMC210827C00037000", 65, 1629820676333, 651921857)
    assert orjson.loads(row.raw) == trade  # type: ignore[arg-type]


def test_the_spec_quote_example_gives_a_later_trade_its_nbbo_and_side() -> None:
    quote = MASSIVE["options_quote"]
    trade = {"ev": "T", "sym": quote["sym"], "x": 302, "p": 9.81, "s": 4, "c": [209], "t": quote["t"] + 25, "q": 1}
    normalizer = PolygonNormalizer()
    (row,) = normalizer(polygon_frame(at_ms(trade["t"]), quote, trade)).rows
    assert isinstance(row, OptionsFlowRow)
    assert (row.bid, row.ask) == (Decimal("9.71"), Decimal("9.81"))  # "bp", "ap"
    assert row.side == "buy"  # at the ask
    assert (row.symbol, row.option_type, row.strike) == ("SPY", "put", Decimal(720))
    assert normalizer.quotes == 1


def test_every_spec_status_event_is_protocol_bare_or_in_an_array() -> None:
    normalizer = PolygonNormalizer()
    for name in ("connect_event", "auth_event", "disconnect_event", "subscribe_event"):
        text = MASSIVE[name]
        for frame_text in (text, f"[{text}]"):
            result = normalizer(ReceivedFrame("polygon", at_ms(0), frame_text))
            assert (result.rows, result.dead_letters) == ((), ()), (name, frame_text)


def test_the_client_library_mock_server_session() -> None:
    """Its trades are stock trades: the options feed refuses them, each with its reason, and nothing else."""
    received = at_ms(1651684192717)
    results = [PolygonNormalizer()(ReceivedFrame("polygon", received, text)) for text in MOCK_FRAMES]
    assert [len(result.rows) for result in results] == [0, 0, 0, 0, 0]
    assert [len(result.dead_letters) for result in results] == [0, 0, 0, 1, 1]
    assert results[3].dead_letters[0].reason == (
        "event 0: 'AAPL' is not an OCC option symbol (ROOT + yymmdd + C/P + 8-digit strike)"
    )
    assert results[4].dead_letters[0].reason.count("'AMZN' is not an OCC option symbol") == 2


def test_a_trade_without_an_exchange_is_stored_without_a_venue() -> None:
    """Every field is optional in the vendor's client models; a missing ``x`` is no reason to lose a trade."""
    trade = {key: value for key, value in MASSIVE["options_trade"].items() if key != "x"}
    (row,) = PolygonNormalizer()(polygon_frame(at_ms(trade["t"]), trade)).rows
    assert isinstance(row, OptionsFlowRow)
    assert row.venue is None
    assert row.trade_price == Decimal("1.54")
    assert row.id == stable_id("polygon", "O:AMC210827C00037000", None, 1629820676333, 651921857)
    assert row.id != PolygonNormalizer()(polygon_frame(at_ms(trade["t"]), MASSIVE["options_trade"])).rows[0].id


def test_the_trade_mutations_the_spec_allows_keep_their_meaning() -> None:
    base = MASSIVE["options_trade"]
    received = at_ms(base["t"])
    without_conditions = {key: value for key, value in base.items() if key != "c"}
    without_sequence = {key: value for key, value in base.items() if key != "q"}
    rows = PolygonNormalizer()(polygon_frame(received, without_conditions, without_sequence)).rows
    assert [row.trade_price for row in rows] == [Decimal("1.54"), Decimal("1.54")]  # type: ignore[union-attr]
    assert rows[1].id == stable_id("polygon", "O:AMC210827C00037000", 65, 1629820676333, None)


def test_a_quote_stamped_far_in_the_future_is_refused_and_does_not_hold_the_book() -> None:
    quote = MASSIVE["options_quote"]
    received = at_ms(quote["t"])
    future = {**quote, "t": quote["t"] + 10 * 365 * 86_400_000, "bp": 1.0, "ap": 1.1}
    trade = {"ev": "T", "sym": quote["sym"], "x": 302, "p": 9.81, "s": 1, "t": quote["t"] + 25, "q": 1}
    normalizer = PolygonNormalizer()
    result = normalizer(polygon_frame(received, future, quote, trade))
    (row,) = result.rows
    assert (row.bid, row.ask) == (Decimal("9.71"), Decimal("9.81"))  # type: ignore[union-attr]
    (letter,) = result.dead_letters
    assert letter.reason.startswith("event 0: t: ") and "after the frame arrived" in letter.reason


# -- Benzinga ----------------------------------------------------------------------------------------


def benzinga_frame(message: object, received: datetime) -> ReceivedFrame:
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    return ReceivedFrame("benzinga", received, text)


V1_RECEIVED = datetime(2012, 2, 17, 21, 1, 41, tzinfo=UTC)  # two seconds after the example's event
NEWER_RECEIVED = datetime(2024, 1, 1, 17, 35, 20, tzinfo=UTC)  # six seconds after its article's "created"


def test_the_v1_spec_example_is_the_documented_article() -> None:
    message = benzinga("news_stream_v1_example.json")
    result = normalize_benzinga(benzinga_frame(benzinga_text("news_stream_v1_example.json"), V1_RECEIVED))
    assert result.dead_letters == ()
    (row,) = result.rows
    assert isinstance(row, NewsEventRow)
    assert row.id == stable_id("benzinga", 2353787)  # content.id, the article's; not data.id, the event's
    assert row.headline == "Company A reports record earnings in Q1"
    assert row.event_ts == datetime(2012, 2, 17, 21, 1, 39, tzinfo=UTC)  # created_at, first publication
    assert row.body == "During a Pre-Market earnings announcement Company A reported ..."
    assert row.url == "https://www.benzinga.com/news/21/05/2353787/company-a-makes-big-moves"
    assert (row.symbol, row.category) == ("GOOG", "News,Movers & Shakers")
    assert (row.source, row.removal, row.raw) == ("benzinga", False, message)


def test_the_newer_docs_example_is_the_documented_article() -> None:
    message = benzinga("news_stream_example.json")
    result = normalize_benzinga(benzinga_frame(benzinga_text("news_stream_example.json"), NEWER_RECEIVED))
    assert result.dead_letters == ()
    (row,) = result.rows
    assert isinstance(row, NewsEventRow)
    assert row.id == stable_id("benzinga", 36444586)
    assert row.headline == "10 Information Technology Stocks With Whale Alerts In Today's Session"
    assert row.event_ts == datetime(2024, 1, 1, 17, 35, 14, tzinfo=UTC)  # "Mon, 01 Jan 2024 13:35:14 -0400"
    assert (row.symbol, row.category) == ("AAPL", "Options")  # stocks[].name, channels[].name
    assert row.body == "Full article content..."
    assert (row.removal, row.raw) == (False, message)


def test_a_v1_removal_with_content_marks_the_article_itself() -> None:
    created = benzinga("news_stream_v1_example.json")
    removed = {**created, "data": {**created["data"], "action": "Removed", "id": 1234567999}}
    (created_row,) = normalize_benzinga(benzinga_frame(created, V1_RECEIVED)).rows
    (removed_row,) = normalize_benzinga(benzinga_frame(removed, V1_RECEIVED)).rows
    assert isinstance(removed_row, NewsEventRow)
    assert removed_row.removal and removed_row.id == created_row.id  # the same article, whatever the event id


def test_a_v1_removal_without_content_names_no_article_and_is_dead_lettered() -> None:
    result = normalize_benzinga(benzinga_frame(benzinga_text("news_stream_v1_removed.json"), V1_RECEIVED))
    assert result.rows == ()  # no phantom "(removed article 1234567891)" row
    (letter,) = result.dead_letters
    assert letter.kind == "invalid_message"
    assert letter.reason == (
        "content.id: the article id is missing; in a v1 (News/v1) message data.id is the event's id, not the"
        " article's, so this message names no article"
    )


def test_a_newer_shape_deletion_without_content_marks_by_its_data_id() -> None:
    deleted = benzinga("news_stream_example.json")
    deleted["data"] = {"action": "deleted", "id": 36444586, "timestamp": "2024-01-01T18:00:00Z"}
    (row,) = normalize_benzinga(benzinga_frame(deleted, NEWER_RECEIVED)).rows
    assert isinstance(row, NewsEventRow)
    assert row.removal and row.id == stable_id("benzinga", 36444586)  # data.id is the article id here


def test_the_replay_response_example_is_not_json_and_is_dead_lettered() -> None:
    result = normalize_benzinga(benzinga_frame(benzinga_text("replay_response_example.txt"), NEWER_RECEIVED))
    assert result.rows == ()
    (letter,) = result.dead_letters
    assert (letter.kind, letter.reason.startswith("invalid JSON")) == ("invalid_json", True)
