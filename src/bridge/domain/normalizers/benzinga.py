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
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from bridge.domain.frames import normalize_message
from bridge.domain.ids import stable_id
from bridge.domain.models import NewsEventRow, Normalized, ReceivedFrame
from bridge.domain.values import (
    NEWS_MAX_AGE,
    InvalidValue,
    optional_int,
    optional_text,
    optional_timestamp,
    plausible,
    require_text,
)

SOURCE: Final = "benzinga"
ACTIONS: Final = {"created": False, "updated": False, "removed": True, "deleted": True}
KEEPALIVE_REPLIES: Final = frozenset({"pong", "ping"})


def normalize_benzinga(frame: ReceivedFrame) -> Normalized:
    if frame.text.strip().lower() in KEEPALIVE_REPLIES:
        return Normalized()
    return normalize_message(frame, lambda message, received_at: (_article(message, received_at),))


def _article(message: object, received_at: datetime) -> NewsEventRow:
    if not isinstance(message, dict):
        raise InvalidValue("expected a JSON object with 'data'")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidValue("data: expected an object with 'action' and 'content'")
    action = str(data.get("action", "")).lower()
    if action not in ACTIONS:
        raise InvalidValue(f"data.action: {data.get('action')!r} is not one of Created, Updated, Removed/Deleted")
    removal = ACTIONS[action]
    given = data.get("content")
    content: dict[str, Any] = given if isinstance(given, dict) else {}
    article_id = content.get("id", data.get("id"))
    if article_id is None or isinstance(article_id, bool | dict | list):
        raise InvalidValue("content.id: the article id is missing")
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
        raw=message,
        removal=removal,
    )


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
