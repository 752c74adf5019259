"""Deterministic row ids, so that a replay or a second replica writes the same id twice and not two rows."""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson

BRIDGE_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/stream-bridge/ids/v1")
_SEPARATOR: Final = "\x1f"  # ASCII unit separator: cannot occur in the parts we hash


def stable_id(kind: str, *parts: object) -> uuid.UUID:
    """A UUIDv5 of ``kind`` and ``parts``; equal inputs give equal ids on every machine."""
    text = _SEPARATOR.join([kind, *("" if part is None else str(part) for part in parts)])
    return uuid.uuid5(BRIDGE_NAMESPACE, text)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always hashes the same."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
