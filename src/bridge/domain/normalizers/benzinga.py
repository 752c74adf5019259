"""Benzinga's news stream into ``news_events``.

Each message is one JSON object (never an array): ``{"api_version", "kind", "data": {"action", "id",
"timestamp", "content": {...}}}``. Two documented shapes are accepted: the v1 spec (``kind:
News/v1``, actions ``Created``/``Updated``/``Removed``, ``created_at`` RFC 3339, ``channels`` as
names, ``securities[].symbol``) and the newer one (a top-level UUID ``id``, lowercase actions with
``deleted``, ``created`` RFC 2822, ``channels`` as ``{name}`` objects, ``stocks[].name``).

Rows: ``source`` = ``benzinga``; ``event_ts`` = the article's publication time (never changes on
revisions); ``headline`` = ``title``; ``body`` as sent (HTML kept); ``category`` = channel names and
``symbol`` = tickers, each joined by commas in the vendor's order; ``sentiment``/``importance`` when
present; ``raw`` = the whole message. The row id is a UUIDv5 of the article id, so an update (even one
that changes the headline) updates the article's row. A removal keeps the row and replaces its
``raw`` with the removal message: history is not deleted, and ``raw->'data'->>'action'`` says it was
withdrawn. ``pong`` replies to keep-alive pings are protocol, not data.

Which field names the article differs between the shapes. In v1, ``data.id`` is "the unique
identifier of the event that triggered the action" and ``content.id`` the article's; ``content``
is optional there, and a removal may come without it. In the newer shape (``kind: news``),
``data.id`` is the article's id. So the article id is ``content.id``, else ``data.id`` of a newer-shape
message; a v1 message without ``content.id`` names no article and is dead-lettered with that
reason (taking its event id for an article id would insert a phantom row and leave the real
article unmarked). Nothing a message holds makes the normalizer raise: the unforeseen becomes the
message's dead letter of kind ``normalizer_error``.

Replays and order: after a reconnect the feed asks for a replay of the last 100 messages, which may
come after live messages that are newer. Writes are upserts by article, so a repeat is harmless, but
an older revision written after a newer one would bring the older text back. ``BenzingaNormalizer``
(one per stream) therefore remembers, per article, the event time (``data.timestamp``) of the newest
message it turned into a row, and turns a message older than that into no row (counted in
``superseded``): the newer state is already on its way. ``normalize_benzinga`` is the stateless form.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import attrs

from bridge.domain.frames import NORMALIZER_ERROR, dead_letter, unexpected
from bridge.domain.ids import stable_id
from bridge.domain.models import NewsEventRow, Normalized, ReceivedFrame
from bridge.domain.values import (
    NEWS_MAX_AGE,
    InvalidJson,
    InvalidValue,
    loads_exact,
    optional_int,
    optional_text,
    optional_timestamp,
    plausible,
    require_text,
    storable,
)

SOURCE: Final = "benzinga"
ACTIONS: Final = {"created": False, "updated": False, "removed": True, "deleted": True}
KEEPALIVE_REPLIES: Final = frozenset({"pong", "ping"})
NEWER_KIND: Final = "news"
"""``kind`` of the newer shape, whose ``data.id`` is the article's id (in v1, ``News/v1``, the event's)."""


def normalize_benzinga(frame: ReceivedFrame) -> Normalized:
    """One message into its row or its dead letter, with no memory of earlier messages."""
    return _normalize(frame)[0]


@attrs.define
class BenzingaNormalizer:
    """``normalize_benzinga`` that leaves out messages older than one already turned into a row.

    One instance per stream (the newest event time per article is its state, bounded by ``max_articles``:
    the least recently seen are forgotten first).
    """

    max_articles: int = 100_000
    superseded: int = 0
    _newest: dict[UUID, tuple[datetime, int]] = attrs.field(factory=dict, init=False, repr=False)

    def __call__(self, frame: ReceivedFrame) -> Normalized:
        result, order = _normalize(frame)
        if order is None:
            return result
        article, event_time = order
        newest = self._newest.pop(article, None)
        if newest is not None and event_time < newest:
            self._newest[article] = newest
            self.superseded += 1
            return Normalized()
        self._newest[article] = event_time
        if len(self._newest) > self.max_articles:
            for forgotten in list(itertools.islice(self._newest, len(self._newest) - self.max_articles)):
                del self._newest[forgotten]
        return result


def _normalize(frame: ReceivedFrame) -> tuple[Normalized, tuple[UUID, tuple[datetime, int]] | None]:
    """The message's row (with its article's row id and event time, when it has a usable one) or its dead letter."""
    if len(frame.text) < 16 and frame.text.strip().lower() in KEEPALIVE_REPLIES:
        return Normalized(), None
    try:
        message = frame.decoded if frame.decoded is not None else loads_exact(frame.text)
    except InvalidJson as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),)), None
    try:
        row = _article(message, frame.received_at)
        event_time = _event_time(message)
        return Normalized(rows=(row,)), None if event_time is None else (row.id, event_time)
    except InvalidValue as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)]),)), None
    except Exception as exc:  # a bug or a shape nobody foresaw: this message only
        return Normalized(dead_letters=(dead_letter(frame, [unexpected(exc)], NORMALIZER_ERROR),)), None


_ACTION_RANK: Final = {"created": 0, "updated": 1, "removed": 2, "deleted": 2}
"""Within one second of ``data.timestamp`` (its resolution in the v1 shape) an article's events come in this order."""


def _event_time(message: Any) -> tuple[datetime, int] | None:
    """``data.timestamp``, the time of the event the message reports, and its action's rank (a creation and its
    update within one second must not swap); ``None`` if absent or unusable (it orders messages, it is not
    stored, so a bad one costs only the ordering)."""
    try:
        moment = optional_timestamp("data.timestamp", message["data"].get("timestamp"))
    except InvalidValue:
        return None
    if moment is None:
        return None
    action = message["data"].get("action")
    return moment, _ACTION_RANK.get(action.lower(), 1) if isinstance(action, str) else 1


def _article(message: object, received_at: datetime) -> NewsEventRow:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object with 'data'")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidValue("data: expected an object with 'action' and 'content'")
    given_action = data.get("action")
    action = given_action.lower() if isinstance(given_action, str) else None
    if action not in ACTIONS:
        shown = repr(given_action) if isinstance(given_action, str | None) else f"a {type(given_action).__name__}"
        raise InvalidValue(f"data.action: {shown[:80]} is not one of Created, Updated, Removed/Deleted")
    removal = ACTIONS[action]
    given = data.get("content")
    content: dict[str, Any] = given if isinstance(given, dict) else {}
    article_id = _article_id(message, data, content)
    published = optional_timestamp("content.created_at", content.get("created_at", content.get("created")))
    if published is not None:
        plausible("content.created_at", published, received_at, NEWS_MAX_AGE)
    title = content.get("title")
    if removal and not title:
        title = f"(removed article {article_id})"
    return NewsEventRow(
        id=stable_id(SOURCE, article_id),
        received_at=received_at,
        source=SOURCE,
        headline=require_text("content.title", title),
        event_ts=published,
        symbol=_joined(_tickers(content)),
        body=_free_text("content.body", content.get("body")),
        url=optional_text("content.url", content.get("url") or None),
        category=_joined(_names(content.get("channels"))),
        sentiment=_free_text("content.sentiment", content.get("sentiment")),
        importance=optional_int("content.importance", content.get("importance")),
        raw=storable(message),
        removal=removal,
    )


def _article_id(message: dict[str, Any], data: dict[str, Any], content: dict[str, Any]) -> int | str:
    if "id" in content:
        return _id_value("content.id", content["id"])
    if message.get("kind") == NEWER_KIND and "id" in data:
        return _id_value("data.id", data["id"])
    if message.get("kind") == NEWER_KIND:
        raise InvalidValue("content.id: the article id is missing (and so is data.id)")
    raise InvalidValue(
        "content.id: the article id is missing; in a v1 (News/v1) message data.id is the event's id, not the"
        " article's, so this message names no article"
    )


def _id_value(column: str, value: object) -> int | str:
    if type(value) is int or (isinstance(value, str) and value.strip() and "\x00" not in value and len(value) <= 200):
        return value
    raise InvalidValue(f"{column}: expected the article id as an integer or text, got {type(value).__name__}")


def _names(items: object) -> list[str]:
    """Channel or stock entries: plain strings (v1) or ``{"name": …}`` objects (newer shape)."""
    if not isinstance(items, list):
        return []
    names = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip():
            names.append(name.strip())
    return names


def _tickers(content: dict[str, Any]) -> list[str]:
    securities = content.get("securities")
    if isinstance(securities, list) and securities:
        return [s["symbol"].strip() for s in securities if isinstance(s, dict) and isinstance(s.get("symbol"), str)]
    if isinstance(content.get("stocks"), list):
        return _names(content["stocks"])
    return _names(content.get("tickers"))


def _joined(values: list[str]) -> str | None:
    return ",".join(values) if values else None


def _free_text(column: str, value: object) -> str | None:
    if value is None or value == "":
        return None if value is None else ""
    if not isinstance(value, str):
        raise InvalidValue(f"{column}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidValue(f"{column}: contains a NUL character, which PostgreSQL text cannot store")
    return value
