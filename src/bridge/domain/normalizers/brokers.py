"""What every broker normalizer shares: the snapshot frame, how it becomes rows, and how a frame that
holds several messages (a tastytrade ``results`` batch, a snapshot of many positions) reports the bad ones.

Brokers stream changes but serve positions and balances as REST snapshots. A feed that fetches a
snapshot emits it as one frame of its own, ``{"type": "snapshot", "account": ID, "as_of": ISO,
"positions": <vendor body>, "balances": <vendor body>}``, so it is recorded and replayed like any
other frame; the vendor's normalizer parses the bodies and this module turns them into the account
row, the positions, a ``BrokerPositionsSnapshot`` (positions the snapshot no longer lists are
deleted) and the balance.

Totality: a broker normalizer never raises. Whatever a part of a frame raises costs that part only:
the frame's other rows are kept and the frame gets one dead letter listing every reason, an
unexpected exception as ``normalizer_error: Type: message``.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from bridge.domain.frames import NORMALIZER_ERROR, UndecodableFrame, dead_letter, decode_json, unexpected
from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    Normalized,
    ReceivedFrame,
    Row,
)
from bridge.domain.values import InvalidValue

T = TypeVar("T")


class Problems:
    """The reasons collected while normalizing one frame (each bad part adds one)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.unexpected = False

    def attempt(self, label: str, build: Callable[[], T]) -> T | None:
        """``build()``, or ``None`` with the reason recorded (prefixed by ``label``) if it raised."""
        try:
            return build()
        except InvalidValue as exc:
            self.reasons.append(f"{label}{exc}")
        except decimal.DecimalException as exc:  # a product or quotient of sent numbers beyond any column
            self.reasons.append(f"{label}a number is out of range ({type(exc).__name__})")
        except Exception as exc:  # an unforeseen shape: this part only
            self.unexpected = True
            self.reasons.append(f"{label}{unexpected(exc)}")
        return None


Handler = Callable[[object, datetime, Problems], Sequence[Row]]


def normalize_broker(frame: ReceivedFrame, handle: Handler) -> Normalized:
    """Decode ``frame``, let ``handle`` build its rows and note bad parts; never raises."""
    try:
        message = decode_json(frame)
    except UndecodableFrame as exc:
        return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
    except Exception as exc:
        return Normalized(dead_letters=(dead_letter(frame, [unexpected(exc)], NORMALIZER_ERROR),))
    problems = Problems()
    rows = problems.attempt("", lambda: tuple(handle(message, frame.received_at, problems)))
    if not problems.reasons:
        return Normalized(rows=rows or ())
    kind = NORMALIZER_ERROR if problems.unexpected else "invalid_message"
    return Normalized(rows=rows or (), dead_letters=(dead_letter(frame, problems.reasons, kind),))


def as_object(column: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(f"{column}: expected an object, got {_kind(value)}")
    return value


def optional_object(column: str, value: object) -> dict[str, Any] | None:
    return None if value is None else as_object(column, value)


def as_list(column: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidValue(f"{column}: expected an array, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def snapshot_rows(
    account: AccountRef,
    as_of: datetime,
    positions: Sequence[BrokerPositionRow],
    balance: BrokerBalanceRow | None,
    kept: Sequence[str] = (),
) -> tuple[Row, ...]:
    """The rows of one account's snapshot.

    ``kept`` names positions the snapshot lists but whose entry could not be used: they stay in the
    snapshot's symbols, so the stored row is kept as it was rather than deleted as closed.
    """
    rows: list[Row] = [BrokerAccountRow(account)]
    rows += [position for position in positions if not position.closes_position]
    held = [p.symbol for p in positions if not p.closes_position]
    held += [symbol for symbol in kept if symbol not in held]
    rows.append(BrokerPositionsSnapshot(account, as_of, tuple(held)))
    if balance is not None:
        rows.append(balance)
    return tuple(rows)


def snapshot_positions(
    problems: Problems,
    items: Sequence[object],
    build: Callable[[dict[str, Any]], BrokerPositionRow],
    symbol_of: Callable[[dict[str, Any]], object],
    label: str = "position",
) -> tuple[list[BrokerPositionRow], list[str]] | None:
    """Each entry of a snapshot's positions: the rows, and the symbols of entries that could not be used.

    ``None`` when an entry is unusable and its symbol unknown: applying the snapshot would then
    delete a position it may well list, so the whole account's snapshot is refused instead.
    """
    rows: list[BrokerPositionRow] = []
    kept: list[str] = []
    for n, item in enumerate(items, 1):
        row = problems.attempt(f"{label} {n}: ", lambda: build(as_object("entry", item)))  # noqa: B023 (called at once)
        if row is not None:
            rows.append(row)
            continue
        symbol = symbol_of(item) if isinstance(item, dict) else None
        if not isinstance(symbol, str) or not symbol.strip() or "\x00" in symbol:
            problems.reasons.append(f"{label} {n} has no usable symbol: the account's snapshot is not applied")
            return None
        kept.append(symbol.strip())
    return rows, kept
