"""Polygon/Massive options (OPRA) events into ``options_flow`` rows, with NBBO side inference.

Every server frame is a JSON array of events. ``T`` (trade) becomes a row; ``Q`` (quote) updates
the in-memory NBBO book that gives later trades their ``bid``, ``ask`` and ``side``; ``status``
events are protocol (the feed logs them). Other event types are dead-lettered: this bridge stores
trades only. One pass over the frame, no I/O.

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
from bridge.domain.frames import UndecodableFrame, dead_letter, decode_json
from bridge.domain.ids import id_of_text
from bridge.domain.models import Normalized, OptionsFlowRow, RawJson, ReceivedFrame, Row, Side
from bridge.domain.nbbo import NbboBook
from bridge.domain.occ import InvalidOptionSymbol, OptionContract, parse_occ
from bridge.domain.side import side_within, usable_quote
from bridge.domain.values import (
    MAX_CLOCK_SKEW,
    TRADE_MAX_AGE,
    InvalidValue,
    decimal_of_float,
    plausible,
    require_decimal,
    require_text,
    require_timestamp,
)

SOURCE: Final = "polygon"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN_NUMBERS: Final = (float, int)
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
            decoded = decode_json(frame)
        except UndecodableFrame as exc:
            return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
        if not isinstance(decoded, list):
            return Normalized(dead_letters=(dead_letter(frame, ["expected a JSON array of events"]),))
        received_at = frame.received_at
        received_us = (received_at - _EPOCH) // _ONE_US
        window_us = (received_us - _TRADE_MAX_AGE_US, received_us + _MAX_CLOCK_SKEW_US)
        rows: list[Row] = []
        reasons: list[str] = []
        for index, event in enumerate(decoded):
            kind = event.get("ev") if type(event) is dict else None
            try:
                if kind == "Q":
                    self._quote(event)
                elif kind == "T":
                    rows.append(self._trade(event, received_at, window_us))
                elif kind != "status":
                    raise InvalidValue(
                        "not an event object" if kind is None else f"event type {kind!r} is not stored by this bridge"
                    )
            except (InvalidValue, InvalidOptionSymbol) as exc:
                reasons.append(f"event {index}: {exc}")
        dead = (dead_letter(frame, reasons),) if reasons else ()
        return Normalized(rows=tuple(rows), dead_letters=dead)

    def _quote(self, event: dict[str, Any]) -> None:
        """Kept as sent when the numbers are plain JSON numbers (the common case, checked cheaply);
        a trade that uses the quote converts and validates its prices."""
        contract = event.get("sym")
        if type(contract) is not str:
            contract = require_text("sym", contract)
        bid, ask, at_ms = event.get("bp"), event.get("ap"), event.get("t")
        if type(bid) not in _PLAIN_NUMBERS or type(ask) not in _PLAIN_NUMBERS:
            bid, ask = require_decimal("bp", bid), require_decimal("ap", ask)
        if type(at_ms) is not int:
            at_ms = _epoch_ms(event)
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
        price = decimal_of_float(price) if type(price) is float else require_decimal("p", price)
        size = _SIZES[size] if type(size) is int and 0 < size < _CACHED_SIZES else require_decimal("s", size)
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
        if type(exchange) is not int:
            raise InvalidValue(f"x: expected an exchange id, got {exchange!r}")
        bid, ask = self._nbbo(ticker, at_ms)
        self.trades += 1
        if bid is None:
            self.trades_without_quote += 1
            side: Side = "unknown"
        else:
            side = side_within(price, bid, ask)  # type: ignore[arg-type]  # both set together
        sequence = event.get("q")
        # the text ``stable_id(SOURCE, ticker, exchange, at_ms, sequence)`` hashes, formatted in one go
        sequence_text = "" if sequence is None else sequence
        trade_id = id_of_text(f"{SOURCE}\x1f{ticker}\x1f{exchange}\x1f{at_ms}\x1f{sequence_text}")
        # positional, in field order: keyword arguments cost an attrs __init__ 0.45 us of a trade's ~4
        return OptionsFlowRow(
            trade_id, received_at, event_ts, underlying, occ_symbol, side, size, price * size * 100,
            contract.strike, contract.expiration, contract.option_type, price, bid, ask, venue(exchange), SOURCE,
            RawJson(orjson.dumps(event).decode()),
        )  # fmt: skip
