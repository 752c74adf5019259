"""Benzinga's two documented message shapes, every action, and what is kept exactly as sent."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from bridge.domain.models import NewsEventRow, ReceivedFrame
from bridge.domain.normalizers.benzinga import BenzingaNormalizer, normalize_benzinga

RECEIVED = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def v1(action: str = "Created", **content: object) -> dict[str, object]:
    body = {"id": 36444586, "revision_id": 1, "type": "story", "created_at": "2026-11-20T14:00:00.000Z",
            "updated_at": "2026-11-20T14:05:00.000Z", "title": "Nestlé beats — €2bn buyback",
            "body": "<p>Prices &amp; <b>more</b> — 日本</p>", "url": "https://www.benzinga.com/news/36444586",
            "channels": ["News", "Earnings"], "securities": [{"symbol": "NSRGY", "exchange": "OTC", "primary": True},
                                                              {"symbol": "NESN", "exchange": "SIX"}],
            **content}  # fmt: skip
    return {"api_version": "websocket/v1", "kind": "News/v1",
            "data": {"id": 99, "action": action, "timestamp": "2026-11-20T14:05:00.000Z", "content": body}}  # fmt: skip


def newer(action: str = "created") -> dict[str, object]:
    return {"id": "550e8400-e29b-41d4-a716-446655440000", "api_version": "websocket/v1", "kind": "news",
            "data": {"action": action, "id": 36444587, "timestamp": "2026-11-20T13:35:14Z",
                     "content": {"id": 36444587, "author": "Benzinga Insights",
                                 "created": "Fri, 20 Nov 2026 09:35:14 -0400",
                                 "updated": "Fri, 20 Nov 2026 09:35:15 -0400",
                                 "title": "10 Tech Stocks With Whale Alerts", "body": "Full article…",
                                 "url": "https://www.benzinga.com/x",
                                 "channels": [{"name": "Options"}, {"name": "Markets"}],
                                 "stocks": [{"name": "AAPL", "exchange": "NASDAQ"}, {"name": "MSFT"}],
                                 "sentiment": "bullish", "importance": 4}}}  # fmt: skip


def normalize(message: object) -> NewsEventRow:
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    result = normalize_benzinga(ReceivedFrame("benzinga", RECEIVED, text))
    assert result.dead_letters == ()
    (row,) = result.rows
    assert isinstance(row, NewsEventRow)
    return row


def test_the_v1_shape_keeps_html_and_non_ascii_exactly() -> None:
    message = v1()
    row = normalize(message)
    assert row.source == "benzinga"
    assert row.headline == "Nestlé beats — €2bn buyback"
    assert row.body == "<p>Prices &amp; <b>more</b> — 日本</p>"
    assert row.event_ts == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    assert (row.symbol, row.category, row.url) == (
        "NSRGY,NESN",
        "News,Earnings",
        "https://www.benzinga.com/news/36444586",
    )
    assert row.raw == message and not row.removal


def test_the_newer_shape_with_rfc2822_times_and_name_objects() -> None:
    row = normalize(newer())
    assert row.event_ts == datetime(2026, 11, 20, 13, 35, 14, tzinfo=UTC)
    assert (row.symbol, row.category, row.sentiment, row.importance) == ("AAPL,MSFT", "Options,Markets", "bullish", 4)


def test_an_update_keeps_the_article_id_so_it_updates_the_same_row() -> None:
    created = normalize(v1("Created"))
    updated = normalize(v1("Updated", title="Nestlé beats estimates", revision_id=2))
    assert created.id == updated.id and updated.headline == "Nestlé beats estimates"


@pytest.mark.parametrize("action", ["Removed", "deleted"])
def test_a_removal_is_marked_and_keeps_its_message(action: str) -> None:
    row = normalize(v1(action))
    assert row.removal and row.raw is not None
    bare = normalize({"data": {"action": action, "id": 7, "content": {"id": 7}}})
    assert bare.removal and bare.headline == "(removed article 7)"


def test_articles_without_tickers_or_channels() -> None:
    row = normalize(v1(securities=[], channels=[]))
    assert (row.symbol, row.category) == (None, None)


def test_keepalive_replies_are_protocol_not_data() -> None:
    assert normalize_benzinga(ReceivedFrame("benzinga", RECEIVED, "pong")).rows == ()
    assert normalize_benzinga(ReceivedFrame("benzinga", RECEIVED, "pong")).dead_letters == ()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{oops", "invalid JSON"),
        ([1, 2], "expected a JSON object with 'data'"),
        ({"data": {"action": "Archived", "content": {"id": 1}}}, "data.action: 'Archived' is not one of"),
        (
            {"data": {"action": "Created", "content": {"id": 1, "created_at": "2026-11-20T14:00:00Z"}}},
            "content.title: expected a string, got null",
        ),
        ({"data": {"action": "Created", "content": {"title": "t"}}}, "content.id: the article id is missing"),
    ],
)
def test_malformed_messages_say_why(message: object, reason: str) -> None:
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    (letter,) = normalize_benzinga(ReceivedFrame("benzinga", RECEIVED, text)).dead_letters
    assert reason in letter.reason


def test_an_older_revision_after_a_newer_one_makes_no_row() -> None:
    """A replay can bring an article's older message after its newer one: the newer state stays."""
    normalizer = BenzingaNormalizer()
    created = v1("Created")
    updated = v1("Updated", title="Nestlé beats estimates", revision_id=2)
    updated["data"]["timestamp"] = "2026-11-20T14:06:00.000Z"  # type: ignore[index]
    removed = v1("Removed")
    removed["data"]["timestamp"] = "2026-11-20T14:07:00.000Z"  # type: ignore[index]

    def rows(message: dict[str, object]) -> tuple[object, ...]:
        return normalizer(ReceivedFrame("benzinga", RECEIVED, orjson.dumps(message).decode())).rows

    assert len(rows(created)) == len(rows(updated)) == 1
    assert rows(created) == () and normalizer.superseded == 1  # the replayed creation
    assert len(rows(updated)) == 1  # the same message again is a harmless repeat
    assert len(rows(removed)) == 1
    assert rows(updated) == () and normalizer.superseded == 2  # withdrawn stays withdrawn
    other = v1("Created", id=1)
    assert len(rows(other)) == 1  # per article


def test_the_memory_of_articles_is_bounded() -> None:
    normalizer = BenzingaNormalizer(max_articles=2)
    for article in (1, 2, 3):
        normalizer(ReceivedFrame("benzinga", RECEIVED, orjson.dumps(v1(id=article)).decode()))
    assert len(normalizer._newest) == 2


def test_a_creation_replayed_after_its_update_of_the_same_instant_makes_no_row() -> None:
    """Event times can tie (the v1 shape has whole seconds): the update still wins over its creation."""
    normalizer = BenzingaNormalizer()
    created = v1("Created")
    updated = v1("Updated", title="Nestlé beats estimates", revision_id=2)
    updated["data"]["timestamp"] = created["data"]["timestamp"]  # type: ignore[index]

    def rows(message: dict[str, object]) -> tuple[object, ...]:
        return normalizer(ReceivedFrame("benzinga", RECEIVED, orjson.dumps(message).decode())).rows

    assert len(rows(created)) == len(rows(updated)) == 1
    assert rows(created) == ()  # the replayed creation, same instant as the update
    assert len(rows(updated)) == 1
