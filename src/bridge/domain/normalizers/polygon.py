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
from datetime import datetime
from typing import Any, Final

import attrs

from bridge.domain.exchanges import venue
from bridge.domain.frames import UndecodableFrame, dead_letter, decode_json
from bridge.domain.ids import stable_id
from bridge.domain.models import Normalized, OptionsFlowRow, ReceivedFrame, Row
from bridge.domain.nbbo import NbboBook, Quote
from bridge.domain.occ import InvalidOptionSymbol, OptionContract, parse_occ
from bridge.domain.side import infer_side, usable_quote
from bridge.domain.values import (
    TRADE_MAX_AGE,
    InvalidValue,
    plausible,
    require_decimal,
    require_text,
    require_timestamp,
)

SOURCE: Final = "polygon"


@functools.lru_cache(maxsize=1 << 16)
def _contract(ticker: str) -> tuple[OptionContract, str, str]:
    """(contract, underlying, OCC symbol) of a ticker: the firehose repeats contracts, so parse each once."""
    contract = parse_occ(ticker)
    return contract, contract.underlying, contract.occ_symbol


def _epoch_ms(event: dict[str, Any]) -> int:
    value = event.get("t")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"t: expected Unix milliseconds as an integer, got {value!r}")
    return value


@attrs.define
class PolygonNormalizer:
    quote_max_age_ms: int = 5000
    book: NbboBook = attrs.Factory(NbboBook)
    trades: int = 0
    trades_without_quote: int = 0
    quotes: int = 0

    def __call__(self, frame: ReceivedFrame) -> Normalized:
        try:
            decoded = decode_json(frame)
        except UndecodableFrame as exc:
            return Normalized(dead_letters=(dead_letter(frame, [str(exc)], "invalid_json"),))
        if not isinstance(decoded, list):
            return Normalized(dead_letters=(dead_letter(frame, ["expected a JSON array of events"]),))
        rows: list[Row] = []
        reasons: list[str] = []
        for index, event in enumerate(decoded):
            kind = event.get("ev") if isinstance(event, dict) else None
            try:
                if kind == "T":
                    rows.append(self._trade(event, frame.received_at))
                elif kind == "Q":
                    self._quote(event)
                elif kind != "status":
                    raise InvalidValue(
                        "not an event object" if kind is None else f"event type {kind!r} is not stored by this bridge"
                    )
            except (InvalidValue, InvalidOptionSymbol) as exc:
                reasons.append(f"event {index}: {exc}")
        dead = (dead_letter(frame, reasons),) if reasons else ()
        return Normalized(rows=tuple(rows), dead_letters=dead)

    def _quote(self, event: dict[str, Any]) -> None:
        contract = require_text("sym", event.get("sym"))
        quote = Quote(require_decimal("bp", event.get("bp")), require_decimal("ap", event.get("ap")), _epoch_ms(event))
        self.book.update(contract, quote)
        self.quotes += 1

    def _trade(self, event: dict[str, Any], received_at: datetime) -> OptionsFlowRow:
        ticker = require_text("sym", event.get("sym"))
        contract, underlying, occ_symbol = _contract(ticker)
        price = require_decimal("p", event.get("p"))
        size = require_decimal("s", event.get("s"))
        if size <= 0 or price < 0:
            raise InvalidValue(f"a trade needs a positive size and a non-negative price, got s={size} p={price}")
        at_ms = _epoch_ms(event)
        exchange = event.get("x")
        if isinstance(exchange, bool) or not isinstance(exchange, int):
            raise InvalidValue(f"x: expected an exchange id, got {exchange!r}")
        quote = self.book.usable(ticker, at_ms, self.quote_max_age_ms)
        if quote is not None and not usable_quote(quote.bid, quote.ask):
            quote = None
        self.trades += 1
        if quote is None:
            self.trades_without_quote += 1
        bid = quote.bid if quote else None
        ask = quote.ask if quote else None
        return OptionsFlowRow(
            id=stable_id(SOURCE, ticker, exchange, at_ms, event.get("q")),
            received_at=received_at,
            event_ts=plausible("t", require_timestamp("t", at_ms), received_at, TRADE_MAX_AGE),
            symbol=underlying,
            option_symbol=occ_symbol,
            side=infer_side(price, bid, ask),
            size=size,
            notional=price * size * 100,
            strike=contract.strike,
            expiration=contract.expiration,
            option_type=contract.option_type,
            trade_price=price,
            bid=bid,
            ask=ask,
            venue=venue(exchange),
            source=SOURCE,
            raw=event,
        )
