"""Coercion of decoded JSON values into column values, with a reason when a value cannot be used.

Vendors send numbers as JSON numbers or decimal strings and times as ISO strings or epoch
milliseconds; every normalizer goes through these functions so the rules (and the messages a
user reads in the dead-letter table) are the same for every feed.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch values above this are taken as microseconds or nanoseconds by mistake, below it as ms.
_MAX_EPOCH_MS: Final = 10**14
MAX_CLOCK_SKEW: Final = timedelta(hours=1)
TRADE_MAX_AGE: Final = timedelta(days=7)
"""Trades and quotes are live data: older than this when received means a broken upstream clock or feed."""
NEWS_MAX_AGE: Final = timedelta(days=3650)
"""Articles are updated long after publication, so only absurd publication times are refused."""
ACCOUNT_STATE_MAX_AGE: Final = timedelta(days=365)


class InvalidValue(ValueError):
    """A value that cannot be stored in its column; the message names the column and the problem."""


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
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return decimal_of_float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidValue(f"{column}: expected a number, got {value!r}") from None
        if not number.is_finite():
            raise InvalidValue(f"{column}: expected a finite number, got {value!r}")
        return number
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
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue(f"{column}: expected a timestamp, got {value!r}")
        if not 0 <= value < _MAX_EPOCH_MS:
            raise InvalidValue(f"{column}: {value!r} is not a plausible epoch-milliseconds timestamp")
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = _rfc2822(value)
        if parsed is None:
            raise InvalidValue(f"{column}: {value!r} is not an ISO-8601 timestamp")
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise InvalidValue(f"{column}: expected a timestamp, got {_describe(value)}")


def _rfc2822(value: str) -> datetime | None:
    """``Mon, 01 Jan 2024 13:35:14 -0400``, as some vendors (Benzinga's newer stream) send times."""
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
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
    return f"{type(value).__name__} {value!r}"
