"""Coercion of decoded JSON values into column values, with a reason when a value cannot be used.

Vendors send numbers as JSON numbers or decimal strings and times as ISO strings or epoch
milliseconds; every normalizer goes through these functions so the rules (and the messages a
user reads in the dead-letter table) are the same for every feed.

Numbers are exact or refused, never rounded. ``orjson`` reads every JSON number into a float or a
64-bit integer, so a frame whose text holds a number that may not survive that (16 or more digits,
a negative exponent, or beyond a float's range) is read by ``loads_exact`` with ``Decimal`` numbers
instead; ``raw_json`` and
``storable`` encode such values back exactly. Numbers are bounded (``MAX_DIGITS`` either side of
the point), so arithmetic on them is exact and can neither overflow nor round.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Overflow, Underflow
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch values above this are taken as microseconds or nanoseconds by mistake, below it as ms.
_MAX_EPOCH_MS: Final = 10**14
MAX_CLOCK_SKEW: Final = timedelta(hours=1)
TRADE_MAX_AGE: Final = timedelta(days=7)
"""Trades and quotes are live data: older than this when received means a broken upstream clock or feed."""
NEWS_MAX_AGE: Final = timedelta(days=3650)
"""Articles are updated long after publication, so only absurd publication times are refused."""
ACCOUNT_STATE_MAX_AGE: Final = timedelta(days=365)


MAX_DIGITS: Final = 1000
"""Digits a number may have before, and after, its decimal point (PostgreSQL's numeric takes far more)."""
_EXACT: Final = Context(prec=8 * MAX_DIGITS, Emax=10 * MAX_DIGITS, Emin=-10 * MAX_DIGITS,
                        traps=[Inexact, Overflow, Underflow, InvalidOperation])  # fmt: skip
"""Products of bounded numbers fit this precision: a rounded result would be a bug, so it raises."""
_NUMBER_CHARS: Final = {code: ord("0" if chr(code) in "0123456789.eE+-" else " ") for code in range(128)}
_LONG_NUMBER: Final = "0" * 16
"""A run of 16 characters that JSON numbers are made of: a number that a float may not hold exactly
(any number of at most 15 significant digits survives a float), or an integer beyond 64 bits."""
_MAX_READABLE_EXPONENT: Final = 308
_MAX_STORED_DEPTH: Final = 254
"""The deepest nesting ``orjson`` encodes, and so the deepest a stored ``raw`` may be."""


class InvalidValue(ValueError):
    """A value that cannot be stored in its column; the message names the column and the problem."""


class InvalidJson(ValueError):
    """A frame's text is not JSON this bridge can read (the message starts with ``invalid JSON``)."""


def loads_exact(text: str) -> Any:
    """The JSON value of ``text`` with every number exact.

    The common frame goes through ``orjson``; one with a long digit run or an exponent is read by
    the standard library with ``Decimal`` numbers (integers outside 64 bits too), at the cost of
    speed only for those frames.
    """
    if not _may_lose_precision(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if "number" not in str(exc):  # "number is infinity when parsed as double": read it exactly
                raise InvalidJson(f"invalid JSON: {exc}") from None
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_exact_int, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidJson("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or a constant such as NaN
        raise InvalidJson(f"invalid JSON: {exc}") from None


def _may_lose_precision(text: str) -> bool:
    """Whether ``text`` may hold a number that orjson would round: a long run of number characters, or
    a negative exponent (``1e-400`` becomes 0.0). Checks in C: this runs for every frame of the firehose
    (about 14 us for a frame of 100 events, a seventh of orjson's own time)."""
    if _LONG_NUMBER in text.translate(_NUMBER_CHARS):
        return True
    return "-" in text and ("e-" in text or "E-" in text)


def _exact_int(text: str) -> int | Decimal:
    number = Decimal(text)
    return int(number) if -(2**63) <= number < 2**64 else number  # what orjson would have kept as int


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _number_fragment(value: Decimal) -> orjson.Fragment:
    """A number for ``raw``, as its exact text; refused beyond the range that JSON readers (orjson, the
    disk spool's) take, about 1e308, as a ``raw`` that cannot be read back would be a trap."""
    if value and value.adjusted() >= _MAX_READABLE_EXPONENT:
        raise InvalidValue(f"raw: the number {str(value)[:40]} is beyond what JSON readers take (about 1e308)")
    return orjson.Fragment(str(value))


def raw_json(value: object) -> str:
    """JSON text of a decoded value, its ``Decimal`` numbers exactly as read."""
    try:
        return orjson.dumps(_with_fragments(value, 0)).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidValue(f"raw: the message cannot be stored as JSON: {exc}") from None


def storable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as a ``raw`` column may hold it: checked to encode, ``Decimal`` numbers kept exactly.

    Returned as is in the common case (plain JSON values); a copy holding ``orjson.Fragment`` numbers
    when it has ``Decimal`` ones; ``InvalidValue`` when it is nested deeper than can be encoded.
    """
    try:
        orjson.dumps(value)
        return value
    except orjson.JSONEncodeError:
        pass
    converted = _with_fragments(value, 0)
    try:
        orjson.dumps(converted)
    except orjson.JSONEncodeError as exc:
        raise InvalidValue(f"raw: the message cannot be stored as JSON: {exc}") from None
    return converted  # type: ignore[no-any-return]  # a dict stays a dict


def _with_fragments(value: Any, depth: int) -> Any:
    if depth > _MAX_STORED_DEPTH:
        raise InvalidValue(f"raw: the message is nested more than {_MAX_STORED_DEPTH} levels deep")
    if isinstance(value, dict):
        return {key: _with_fragments(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_fragments(item, depth + 1) for item in value]
    if isinstance(value, Decimal) and value.is_finite():
        return _number_fragment(value)
    return value


def exact_product(*factors: Decimal | int) -> Decimal:
    """The exact product of bounded numbers (``notional``); never rounded."""
    result = Decimal(1)
    try:
        for factor in factors:
            result = _EXACT.multiply(result, factor)
    except DecimalException as exc:  # cannot happen within MAX_DIGITS; refuse rather than round
        raise InvalidValue(f"the product of {factors} cannot be computed exactly: {exc!r}") from None
    return result


def _bounded(column: str, value: object, number: Decimal) -> Decimal:
    """Refuse a number too large or too finely divided to store and compute with exactly."""
    exponent = number.as_tuple().exponent
    if number and (number.adjusted() >= MAX_DIGITS or (isinstance(exponent, int) and exponent < -MAX_DIGITS)):
        shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:60]}…"
        raise InvalidValue(
            f"{column}: {shown} is out of range: this bridge stores numbers exactly, with at most"
            f" {MAX_DIGITS} digits before and after the decimal point"
        )
    return number


def require_text(column: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"{column}: expected a string, got {_describe(value)}")
    if not value.strip():
        raise InvalidValue(f"{column}: must not be empty")
    if "\x00" in value:
        raise InvalidValue(f"{column}: contains a NUL character, which PostgreSQL text cannot store")
    return value


def optional_text(column: str, value: object) -> str | None:
    return None if value is None else require_text(column, value)


def require_decimal(column: str, value: object) -> Decimal:
    if isinstance(value, bool):
        raise InvalidValue(f"{column}: expected a number, got {_describe(value)}")
    if isinstance(value, int):
        return Decimal(value) if -(2**64) < value < 2**64 else _bounded(column, value, Decimal(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return decimal_of_float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return _bounded(column, value, value)
    if isinstance(value, str):
        if len(value) > 4 * MAX_DIGITS:
            raise InvalidValue(f"{column}: expected a number, got a string of {len(value):,} characters")
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidValue(f"{column}: expected a number, got {value!r}") from None
        if not number.is_finite():
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return _bounded(column, value, number)
    raise InvalidValue(f"{column}: expected a number, got {_describe(value)}")


@functools.lru_cache(maxsize=1 << 16, typed=True)
def decimal_of_float(value: float) -> Decimal:
    """A float as the ``Decimal`` of its shortest repr (1.54 stays 1.54, not 1.5400000000000000355).

    Cached, as prices repeat (a few hundred distinct ones per contract a day) and this runs per
    event; a non-finite value raises ``InvalidValue`` (exceptions are not cached).
    """
    if not math.isfinite(value):
        raise InvalidValue(f"expected a finite number, got {value!r}")
    return Decimal(repr(value))


def optional_decimal(column: str, value: object) -> Decimal | None:
    return None if value is None else require_decimal(column, value)


def optional_int(column: str, value: object) -> int | None:
    if value is None:
        return None
    number = require_decimal(column, value)
    if number != number.to_integral_value():
        raise InvalidValue(f"{column}: expected a whole number, got {value!r}")
    if not -(2**31) <= number < 2**31:
        raise InvalidValue(f"{column}: {value!r} is out of range for an integer column")
    return int(number)


def require_timestamp(column: str, value: object) -> datetime:
    """ISO-8601 text (``Z`` or an offset; naive means UTC) or epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidValue(f"{column}: expected a timestamp, got {_describe(value)}")
    if isinstance(value, int | float | Decimal):
        if not math.isfinite(value):
            raise InvalidValue(f"{column}: expected a timestamp, got {value!r}")
        if not 0 <= value < _MAX_EPOCH_MS:
            raise InvalidValue(f"{column}: {value!r} is not a plausible epoch-milliseconds timestamp")
        if isinstance(value, Decimal):  # a float would round a long fraction: microseconds exactly
            return _EPOCH + timedelta(microseconds=int(value * 1000))
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = _rfc2822(value)
        if parsed is None:
            raise InvalidValue(f"{column}: {value!r} is not an ISO-8601 timestamp")
        try:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past the last datetime once in UTC
            raise InvalidValue(f"{column}: {value!r} is outside the timestamps' range (years 1 to 9999, UTC)") from None
    raise InvalidValue(f"{column}: expected a timestamp, got {_describe(value)}")


def _rfc2822(value: str) -> datetime | None:
    """``Mon, 01 Jan 2024 13:35:14 -0400``, as some vendors (Benzinga's newer stream) send times."""
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def plausible(column: str, moment: datetime, received_at: datetime, max_past: timedelta) -> datetime:
    """A vendor time far from when the frame arrived is a bug upstream, not data: refuse it with the gap."""
    if moment > received_at + MAX_CLOCK_SKEW:
        raise InvalidValue(f"{column}: {moment.isoformat()} is {moment - received_at} after the frame arrived")
    if moment < received_at - max_past:
        raise InvalidValue(f"{column}: {moment.isoformat()} is more than {max_past.days} days before the frame arrived")
    return moment


def optional_timestamp(column: str, value: object) -> datetime | None:
    return None if value is None else require_timestamp(column, value)


def optional_date(column: str, value: object) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{column}: expected a YYYY-MM-DD date, got {_describe(value)}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidValue(f"{column}: {value!r} is not a YYYY-MM-DD date") from None


def require_choice(column: str, value: object, choices: frozenset[str]) -> str:
    text = require_text(column, value).strip().lower()
    if text not in choices:
        allowed = ", ".join(sorted(choices))
        raise InvalidValue(f"{column}: {value!r} is not one of {allowed}")
    return text


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 100 else f"{text[:100]}…"
