"""The value types settings are made of, and how the environment's strings become them.

Each type is a ``NewType`` with a cattrs structure hook that raises ``ValueError`` with the sentence
an operator reads ("must be a whole number"), so error messages come from here and never from
parsing another library's wording. ``setting`` declares a field once: its default, its help text,
whether it is secret, and (for vendor settings) what its feed cannot run without.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, NewType, cast, get_args, get_origin

import attrs
import cattrs
from psycopg.conninfo import conninfo_to_dict

PositiveInt = NewType("PositiveInt", int)
Port = NewType("Port", int)
PositiveFloat = NewType("PositiveFloat", float)
NonNegativeFloat = NewType("NonNegativeFloat", float)
LeaseTtl = NewType("LeaseTtl", float)
FeedList = NewType("FeedList", tuple[str, ...])
TextList = NewType("TextList", tuple[str, ...])
"""Comma-separated values, upper-cased (account ids, contracts as written)."""
OptionContracts = NewType("OptionContracts", tuple[str, ...])
"""Comma-separated OCC contracts, with or without the vendor's ``O:`` prefix; kept with it."""
WebSocketUrl = NewType("WebSocketUrl", str)
HttpUrl = NewType("HttpUrl", str)
DatabaseUrl = NewType("DatabaseUrl", str)

MAX_LEASE_TTL_S: Final = 60.0


def setting(
    default: Any = None,
    help: str = "",
    *,
    secret: bool = False,
    env: str | None = None,
    needed: str | None = None,
    selects: bool = False,
    factory: Any = None,
) -> Any:
    """An attrs field with its environment metadata.

    ``env`` names the variable (vendor settings derive it from their prefix and the field's name);
    ``needed`` is what the feed lacks when the value is unset ("the API key"); ``selects`` marks the
    setting whose presence turns the feed on when ``BRIDGE_FEEDS`` is unset.
    """
    metadata = {"env": env, "help": help, "secret": secret, "needed": needed, "selects": selects}
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def _text(value: object) -> str:
    return str(value).strip()


def _whole_number(value: object) -> int:
    text = _text(value)
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _number(value: object) -> float:
    try:
        number = float(_text(value))
    except ValueError:
        raise ValueError("must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return number


def _positive_int(value: object, _: object) -> int:
    number = _whole_number(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _port(value: object, _: object) -> int:
    number = _whole_number(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a TCP port (1-65535), or 0 to turn it off")
    return number


def _positive_float(value: object, _: object) -> float:
    number = _number(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _non_negative_float(value: object, _: object) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError("must be zero or a positive number")
    return number


def _lease_ttl(value: object, _: object) -> float:
    number = _positive_float(value, None)
    if number > MAX_LEASE_TTL_S:
        raise ValueError(f"must be at most {MAX_LEASE_TTL_S:g} seconds (a dead replica's feeds wait this long)")
    return number


def _items(value: object) -> list[str]:
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _text_list(value: object, _: object) -> tuple[str, ...]:
    return tuple(item.upper() for item in _items(value))


def _option_contracts(value: object, _: object) -> tuple[str, ...]:
    contracts = [item.upper() for item in _items(value)]
    return tuple(item if item.startswith("O:") else f"O:{item}" for item in contracts)


def _websocket_url(value: object, _: object) -> str:
    text = _text(value)
    if not re.match(r"^wss?://[^/\s]+", text):
        raise ValueError("must be a ws:// or wss:// URL")
    return text


def _http_url(value: object, _: object) -> str:
    text = _text(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("must be an http:// or https:// URL")
    return text


def _database_url(value: object, _: object) -> str:
    text = _text(value)
    looks_like_url = re.match(r"^postgres(ql)?://", text)
    if "://" in text and not looks_like_url:
        raise ValueError("must be a postgresql:// URL (or libpq key=value settings)")
    if not looks_like_url and "=" not in text:
        raise ValueError("must be a postgresql:// URL (or libpq key=value settings)")
    try:
        params = conninfo_to_dict(text)
    except Exception as exc:  # psycopg's message may quote the URL, password included
        userinfo = text.partition("://")[2].rpartition("@")[0] if looks_like_url else text
        holds_password = ":" in userinfo if looks_like_url else "password" in text.lower()
        reason = "" if holds_password else f": {str(exc).strip().splitlines()[0]}"
        raise ValueError(f"is not a valid PostgreSQL URL{reason} (check its quoting and percent-encoding)") from None
    port = params.get("port")
    if port is not None and not all(part.strip().isdigit() for part in str(port).split(",")):
        raise ValueError("has a port that is not a number")
    return text


def _literal(value: object, kind: Any) -> str:
    text = _text(value).lower()
    allowed = get_args(kind)
    if text not in allowed:
        raise ValueError(f"must be one of: {' | '.join(allowed)}")
    return text


def make_converter(feed_names: tuple[str, ...]) -> cattrs.Converter:
    """A converter from environment strings; ``feed_names`` are the feeds ``BRIDGE_FEEDS`` may list."""

    def feed_list(value: object, _: object) -> tuple[str, ...]:
        names = tuple(name.lower() for name in _items(value))
        unknown = [name for name in names if name not in feed_names]
        if unknown:
            raise ValueError(f"unknown feed(s) {', '.join(unknown)}; available: {', '.join(feed_names)}")
        return names

    converter = cattrs.Converter(detailed_validation=True)
    hooks: dict[Any, Any] = {
        PositiveInt: _positive_int,
        Port: _port,
        PositiveFloat: _positive_float,
        NonNegativeFloat: _non_negative_float,
        LeaseTtl: _lease_ttl,
        FeedList: feed_list,
        TextList: _text_list,
        OptionContracts: _option_contracts,
        WebSocketUrl: _websocket_url,
        HttpUrl: _http_url,
        DatabaseUrl: _database_url,
    }
    for kind, hook in hooks.items():
        converter.register_structure_hook(kind, hook)
    converter.register_structure_hook_func(lambda kind: get_origin(kind) is cast(Any, Literal), _literal)
    return converter
