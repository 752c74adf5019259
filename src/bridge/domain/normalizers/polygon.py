"""Polygon/Massive options (OPRA) events into ``options_flow`` rows, with NBBO side inference.

Every server frame is a JSON array of events (a lone event object, as the vendor's spec shows its
examples, is taken as a frame of one). ``T`` (trade) becomes a row; ``Q`` (quote) updates the
in-memory NBBO book that gives later trades their ``bid``, ``ask`` and ``side``; ``status`` events
are protocol (the feed logs them). Other event types are dead-lettered: this bridge stores trades
only. One pass over the frame, no I/O. Total: whatever an event holds costs only that event (a
reason in the frame's dead letter, of kind ``normalizer_error`` when nothing foresaw it).

A trade without ``x`` (the spec lists it, but the client library treats every field as optional)
is stored with a null ``venue``. Quote times get the trades' plausibility window: a quote stamped
far in the future would otherwise hold its contract's book (later quotes count as late ones).

Field reference (the vendor's websocket spec): trade ``sym`` ``x`` ``p`` ``s`` ``c`` ``t`` (Unix ms)
``q`` (per-contract sequence); quote ``sym`` ``bx`` ``ax`` ``bp`` ``ap`` ``bs`` ``as`` ``t`` ``q``.
A quote counts for a trade when it arrived before it and is at most ``quote_max_age_ms`` older in
event time; a quote stamped after the trade is not used (no look-ahead).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import attrs
import orjson

from bridge.domain.exchanges import venue
from bridge.domain.frames import NORMALIZER_ERROR, dead_letter, unexpected
from bridge.domain.ids import id_of_text, stable_id
from bridge.domain.models import DeadLetter, Normalized, OptionsFlowRow, RawJson, ReceivedFrame, Row, Side
from bridge.domain.nbbo import NbboBook
from bridge.domain.occ import InvalidOptionSymbol, OptionContract, parse_occ
from bridge.domain.side import side_within, usable_quote
from bridge.domain.values import (
    MAX_CLOCK_SKEW,
    TRADE_MAX_AGE,
    InvalidJson,
    InvalidValue,
    decimal_of_float,
    exact_product,
    loads_exact,
    plausible,
    raw_json,
    require_decimal,
    require_text,
    require_timestamp,
)

SOURCE: Final = "polygon"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN_NUMBERS: Final = (float, int)
_SEQUENCE_TYPES: Final = (int, str, float, Decimal)
_ONE_US: Final = timedelta(microseconds=1)
_TRADE_MAX_AGE_US: Final = TRADE_MAX_AGE // _ONE_US
_MAX_CLOCK_SKEW_US: Final = MAX_CLOCK_SKEW // _ONE_US
_CACHED_SIZES: Final = 4096
_SIZES: Final = tuple(Decimal(size) for size in range(_CACHED_SIZES))
"""Trade sizes as ``Decimal``, built once: nearly every trade is of a few contracts."""


@functools.lru_cache(maxsize=1 << 16)
def _contract(ticker: str) -> tuple[OptionContract, str, str]:
    """(contract, underlying, OCC symbol) of a ticker: the firehose repeats contracts, so parse each once."""
    contract = parse_occ(require_text("sym", ticker))
    return contract, contract.underlying, contract.occ_symbol


def _epoch_ms(event: dict[str, Any]) -> int:
    value = event.get("t")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"t: expected Unix milliseconds as an integer, got {value!r}")
    return value


@attrs.define
class PolygonNormalizer:
    """Stateful: the NBBO book of one stream. One instance per feed, driven from one task.

    This is the firehose's hot path (most of the bridge's CPU at the open), so it avoids work a
    generic normalizer would repeat: OCC symbols are parsed once per contract, float prices become
    ``Decimal`` through a cache, and the plausibility window is checked on integers per frame.
    """

    quote_max_age_ms: int = 5000
    book: NbboBook = attrs.Factory(NbboBook)
    trades: int = 0
    trades_without_quote: int = 0
    quotes: int = 0
    _last_ms: int = attrs.field(default=-1, init=False, repr=False)
    _last_ts: datetime = attrs.field(default=_EPOCH, init=False, repr=False)

    def __call__(self, frame: ReceivedFrame) -> Normalized:
        try:
            decoded = frame.decoded if frame.decoded is not None else loads_exact(frame.text)
        except InvalidJson as exc:
            return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
        if type(decoded) is dict:
            decoded = [decoded]
        elif not isinstance(decoded, list):
            return Normalized(dead_letters=(dead_letter(frame, ["expected a JSON array of events"]),))
        received_at = frame.received_at
        received_us = (received_at - _EPOCH) // _ONE_US
        window_us = (received_us - _TRADE_MAX_AGE_US, received_us + _MAX_CLOCK_SKEW_US)
        rows: list[Row] = []
        reasons: list[str] = []
        failures: list[str] = []
        for index, event in enumerate(decoded):
            kind = event.get("ev") if type(event) is dict else None
            try:
                if kind == "Q":
                    self._quote(event, received_at, window_us)
                elif kind == "T":
                    rows.append(self._trade(event, received_at, window_us))
                elif kind != "status":
                    what = "not an event object" if kind is None else f"event type {_shown(kind)} is not stored"
                    raise InvalidValue(what if kind is None else f"{what} by this bridge")
            except (InvalidValue, InvalidOptionSymbol) as exc:
                reasons.append(f"event {index}: {exc}")
            except Exception as exc:  # unforeseen: this event only, the frame's others go on
                failures.append(f"event {index}: {unexpected(exc)}")
        if not reasons and not failures:
            return Normalized(rows=tuple(rows))
        return Normalized(rows=tuple(rows), dead_letters=_dead_letters(frame, reasons, failures))

    def _quote(self, event: dict[str, Any], received_at: datetime, window_us: tuple[int, int]) -> None:
        """Kept as sent when the numbers are plain JSON numbers (the common case, checked cheaply);
        a trade that uses the quote converts and validates its prices."""
        contract = event.get("sym")
        if type(contract) is not str:
            contract = require_text("sym", contract)
        bid, ask, at_ms = event.get("bp"), event.get("ap"), event.get("t")
        if type(bid) not in _PLAIN_NUMBERS or type(ask) not in _PLAIN_NUMBERS:
            bid, ask = require_decimal("bp", bid), require_decimal("ap", ask)
        if type(at_ms) is not int or not window_us[0] <= at_ms * 1000 <= window_us[1]:
            at_ms = _epoch_ms(event)
            plausible("t", require_timestamp("t", at_ms), received_at, TRADE_MAX_AGE)
        self.book.update(contract, bid, ask, at_ms)  # type: ignore[arg-type]  # checked just above
        self.quotes += 1

    def _nbbo(self, ticker: str, at_ms: int) -> tuple[Decimal, Decimal] | tuple[None, None]:
        """The usable (bid, ask) for a trade of ``ticker`` at ``at_ms``, as ``Decimal``; else (None, None)."""
        quote = self.book.usable(ticker, at_ms, self.quote_max_age_ms)
        if quote is None:
            return None, None
        bid, ask, _ = quote
        try:
            bid = decimal_of_float(bid) if type(bid) is float else require_decimal("bp", bid)
            ask = decimal_of_float(ask) if type(ask) is float else require_decimal("ap", ask)
        except InvalidValue:
            return None, None  # a quote with a value no trade can use counts as no quote
        return (bid, ask) if usable_quote(bid, ask) else (None, None)

    def _trade(self, event: dict[str, Any], received_at: datetime, window_us: tuple[int, int]) -> OptionsFlowRow:
        ticker = event.get("sym")
        if type(ticker) is not str:
            ticker = require_text("sym", ticker)
        contract, underlying, occ_symbol = _contract(ticker)
        price, size, at_ms, exchange = event.get("p"), event.get("s"), event.get("t"), event.get("x")
        if type(price) is float and type(size) is int and 0 < size < _CACHED_SIZES:
            # at most 17 + 4 + 3 digits: the default context multiplies these exactly
            price, size = decimal_of_float(price), _SIZES[size]
            notional = price * size * 100
        else:
            price, size = require_decimal("p", price), require_decimal("s", size)
            notional = exact_product(price, size, 100)
        if size <= 0 or price < 0:
            raise InvalidValue(f"a trade needs a positive size and a non-negative price, got s={size} p={price}")
        if type(at_ms) is int and window_us[0] <= at_ms * 1000 <= window_us[1]:
            # inside the plausibility window, so a valid epoch: exact to the microsecond for ms values;
            # trades in the same millisecond (dozens at a busy open) share one datetime
            if at_ms != self._last_ms:
                self._last_ms, self._last_ts = at_ms, datetime.fromtimestamp(at_ms / 1000, UTC)
            event_ts = self._last_ts
        else:
            at_ms = _epoch_ms(event)
            event_ts = plausible("t", require_timestamp("t", at_ms), received_at, TRADE_MAX_AGE)
        exchange_text: object
        if exchange is None:
            exchange_text, exchange_venue = "", None  # no exchange given: stored without a venue
        elif type(exchange) is int:
            exchange_text, exchange_venue = exchange, venue(exchange)
        else:
            raise InvalidValue(f"x: expected an exchange id, got {_shown(exchange)}")
        bid, ask = self._nbbo(ticker, at_ms)
        self.trades += 1
        if bid is None:
            self.trades_without_quote += 1
            side: Side = "unknown"
        else:
            side = side_within(price, bid, ask)  # type: ignore[arg-type]  # both set together
        sequence = event.get("q")
        # the text ``stable_id(SOURCE, ticker, exchange, at_ms, sequence)`` hashes, formatted in one go
        if sequence is None:
            sequence_text: object = ""
        elif type(sequence) in _SEQUENCE_TYPES:  # the spec's integer (text and floats hash as they always did)
            sequence_text = sequence
        else:
            raise InvalidValue(f"q: expected a sequence number, got {_shown(sequence)}")
        trade_id = id_of_text(f"{SOURCE}\x1f{ticker}\x1f{exchange_text}\x1f{at_ms}\x1f{sequence_text}")
        try:
            raw = orjson.dumps(event).decode()
        except orjson.JSONEncodeError:  # exact numbers from a long-digit frame, or nesting too deep
            raw = raw_json(event)
        # positional, in field order: keyword arguments cost an attrs __init__ 0.45 us of a trade's ~4
        return OptionsFlowRow(
            trade_id, received_at, event_ts, underlying, occ_symbol, side, size, notional,
            contract.strike, contract.expiration, contract.option_type, price, bid, ask, exchange_venue, SOURCE,
            RawJson(raw),
        )  # fmt: skip


def _shown(value: object) -> str:
    """A value in a reason, cut short: a reason is read by a person and any JSON may arrive."""
    try:
        text = repr(value)
    except Exception:  # a repr of something nested too deeply
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else f"{text[:80]}…"


def _dead_letters(frame: ReceivedFrame, reasons: list[str], failures: list[str]) -> tuple[DeadLetter, ...]:
    """The frame's refused events in one dead letter, the ones that failed unexpectedly in another.

    The second has its own id (a dead letter's id is the frame's otherwise) so neither hides the other.
    """
    letters = [dead_letter(frame, reasons)] if reasons else []
    if failures:
        letter = dead_letter(frame, failures, NORMALIZER_ERROR)
        if reasons:
            letter = attrs.evolve(letter, id=stable_id("dead_letter", NORMALIZER_ERROR, str(letter.id)))
        letters.append(letter)
    return tuple(letters)
