"""Polygon gap backfill, the pure part: what the live stream saw, which REST trades it missed, and their frame.

The live stream identifies a trade by (contract, exchange, millisecond, sequence ``q``); the REST API
(``/v3/trades/{ticker}``) gives the nanosecond SIP time but no sequence, so a REST trade cannot be
matched to a live one by id. The overlap rule works per contract from what both sides carry:

* ``before``: the millisecond of the contract's last live trade before the gap, with the trades the
  stream delivered in it (exchange, price, size); ``after``: the first millisecond after it, likewise.
* REST trades strictly between the two milliseconds were missed and are kept.
* REST trades *in* a boundary millisecond are matched against that millisecond's live trades as a
  multiset on (exchange, price, size): each live trade cancels one REST trade with the same values,
  the rest were missed. Two distinct trades in one millisecond are therefore never merged, and a
  trade both sides saw is kept once.
* Without a live trade on a side, that side's bound is the gap's own time, inclusive.

Backfilled trades become ``T`` events shaped like the stream's, with ``t`` = the SIP time in ms and
``q`` = ``rest:<sip ns>:<n>`` (``n`` counts REST trades with the same SIP nanosecond), so their ids
never collide with live ids nor with each other, and a replay of the journaled frame writes nothing
twice. ``raw`` keeps the REST result under ``rest``. REST quotes, when the plan serves them, become
``Q`` events in the same frame, ordered by SIP time, so the normalizer's own side rule applies; a
frame gets a normalizer (an NBBO book) of its own, so history never touches the live book.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs
import orjson

from bridge.domain.models import Normalized, ReceivedFrame
from bridge.domain.nbbo import NbboBook
from bridge.domain.normalizers.polygon import PolygonNormalizer
from bridge.domain.values import InvalidJson, loads_exact

BACKFILL_PREFIX: Final = '{"backfill"'
"""How a backfill frame starts: live frames are arrays (or a lone ``{"ev"…}`` object)."""
NS_PER_MS: Final = 1_000_000

TradeKey = tuple[object, object, object]
"""(exchange, price, size) exactly as the stream sent them."""


def _canon(value: object) -> object:
    """One form for a number however it was sent (``1.2``, ``1.20``, an exact ``Decimal``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except (InvalidOperation, ValueError):
            return value
    return value


def _hashable(value: object) -> object:
    """A value usable as a key whatever JSON it is (a list or an object from a hostile answer)."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def canonical(key: TradeKey) -> tuple[object, object, object]:
    return tuple(_hashable(_canon(part)) for part in key)  # type: ignore[return-value]


@attrs.define(slots=True)
class Edge:
    """One millisecond of a contract's live trades, and the trades seen in it."""

    ms: int
    keys: list[TradeKey]


Millis = list[Any]
"""``[ms, key, key, …]``: one millisecond of a contract's live trades, kept as a plain list (the receive
path builds one per trade; an attrs instance costs twice as much)."""


def edge_of(millis: Millis | None) -> Edge | None:
    return None if millis is None else Edge(millis[0], list(millis[1:]))


@attrs.define
class ConnectionTrades:
    """The live trades of one connection, per contract: its first and its last millisecond."""

    started_at: datetime
    first: dict[str, Millis] = attrs.Factory(dict)
    last: dict[str, Millis] = attrs.Factory(dict)
    first_ms: int | None = None
    """The millisecond of the connection's first trade, any contract: its subscription was in effect by then."""

    def observe(self, events: Iterable[object]) -> None:
        """Note every ``T`` event of a frame (the receive path: a few dict operations a trade)."""
        first, last = self.first, self.last
        for event in events:
            if type(event) is not dict or event.get("ev") != "T":
                continue
            sym, at = event.get("sym"), event.get("t")
            if type(sym) is not str or type(at) is not int:
                continue  # the normalizer dead-letters it; nothing to learn here
            key = (event.get("x"), event.get("p"), event.get("s"))
            millis = last.get(sym)
            if millis is None:
                if self.first_ms is None:
                    self.first_ms = at
                first[sym] = [at, key]
                last[sym] = [at, key]
            elif at == millis[0]:
                millis.append(key)
                opening = first[sym]
                if opening[0] == at and len(opening) < len(millis):
                    opening.append(key)  # still the connection's first millisecond
            elif at > millis[0]:
                last[sym] = [at, key]

    def first_edge(self, contract: str) -> Edge | None:
        return edge_of(self.first.get(contract))


@attrs.define
class LiveTrades:
    """What the live stream delivered, per connection, for the backfill of the gaps between connections."""

    max_contracts: int = 200_000
    """The most contracts ``history`` remembers (the most recently traded are kept)."""
    history: dict[str, Millis] = attrs.Factory(dict)
    """The last millisecond per contract over the connections before the current one."""
    current: ConnectionTrades | None = None

    def new_connection(self, at: datetime) -> ConnectionTrades:
        if self.current is not None:
            self.history.update(self.current.last)
            if len(self.history) > self.max_contracts:
                kept = heapq.nlargest(self.max_contracts, self.history.items(), key=lambda item: item[1][0])
                self.history = dict(kept)
        self.current = ConnectionTrades(at)
        return self.current

    def observe(self, events: Iterable[object]) -> None:
        if self.current is not None:
            self.current.observe(events)

    def last_edge(self, contract: str) -> Edge | None:
        """The contract's last live millisecond before the current connection."""
        return edge_of(self.history.get(contract))

    def most_recent(self, count: int, exclude: frozenset[str] = frozenset()) -> list[str]:
        """The ``count`` contracts traded most recently before the current connection."""
        candidates = ((millis[0], sym) for sym, millis in self.history.items() if sym not in exclude)
        return [sym for _, sym in heapq.nlargest(count, candidates)]


@attrs.frozen
class Bounds:
    """The interval one contract's backfill fetches, and the live trades of its boundary milliseconds."""

    contract: str
    lower_ms: int
    upper_ms: int
    """Inclusive both: REST is asked for ``[lower_ms, upper_ms + 1)`` in nanoseconds."""
    seen: Mapping[int, Counter[tuple[object, object, object]]]
    """Per boundary millisecond, the live trades (canonical keys) REST trades are matched against."""

    @property
    def gte_ns(self) -> int:
        return self.lower_ms * NS_PER_MS

    @property
    def lt_ns(self) -> int:
        return (self.upper_ms + 1) * NS_PER_MS


def bounds_for(
    contract: str, before: Edge | None, after: Edge | None, gap_start_ms: int, gap_end_ms: int
) -> Bounds | None:
    """The interval to fetch for ``contract``; ``None`` when there is none (the live sides touch)."""
    lower = before.ms if before is not None else gap_start_ms
    upper = after.ms if after is not None else max(gap_end_ms, lower)
    if upper < lower:
        return None
    seen: dict[int, Counter[tuple[object, object, object]]] = {}
    for edge in (before, after):
        if edge is not None:
            seen.setdefault(edge.ms, Counter()).update(canonical(key) for key in edge.keys)
    return Bounds(contract, lower, upper, seen)


def rest_trade_key(result: Mapping[str, Any]) -> tuple[object, object, object]:
    return canonical((result.get("exchange"), result.get("price"), result.get("size")))


def missed_trades(bounds: Bounds, results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The REST trades the live stream did not deliver, by the overlap rule (see the module's docstring)."""
    left = {ms: Counter(keys) for ms, keys in bounds.seen.items()}
    missed: list[Mapping[str, Any]] = []
    for result in results:
        sip = result.get("sip_timestamp")
        if type(sip) is not int:
            missed.append(result)  # the normalizer dead-letters what it cannot read: never dropped silently
            continue
        ms = sip // NS_PER_MS
        if ms < bounds.lower_ms or ms > bounds.upper_ms:
            continue  # outside what was asked for: the live stream's
        seen = left.get(ms)
        if seen is not None:
            key = rest_trade_key(result)
            if seen[key] > 0:
                seen[key] -= 1
                continue
        missed.append(result)
    return missed


def trade_events(
    contract: str, missed: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """REST trades as stream-shaped ``T`` events with a sequence of their own (see the module's docstring).

    ``n`` in the sequence counts within ``results`` (the whole REST answer ``missed`` was taken from), so a
    trade gets the same id whichever of its nanosecond's neighbours the stream happened to deliver.
    """
    ordinal: Counter[object] = Counter()
    numbers: dict[int, int] = {}
    for result in results if results is not None else missed:
        sip_key = _hashable(result.get("sip_timestamp"))
        ordinal[sip_key] += 1
        numbers[id(result)] = ordinal[sip_key]
    events: list[dict[str, Any]] = []
    for result in missed:
        sip = result.get("sip_timestamp")
        event: dict[str, Any] = {
            "ev": "T", "sym": contract, "x": result.get("exchange"), "p": result.get("price"),
            "s": result.get("size"), "c": result.get("conditions", []),
            "t": sip // NS_PER_MS if type(sip) is int else sip, "q": f"rest:{sip}:{numbers[id(result)]}",
            "rest": result,
        }  # fmt: skip
        events.append(event)
    return events


def quote_events(contract: str, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """REST quotes (``/v3/quotes``) as stream-shaped ``Q`` events."""
    return [
        {"ev": "Q", "sym": contract, "bx": r.get("bid_exchange"), "ax": r.get("ask_exchange"),
         "bp": r.get("bid_price"), "ap": r.get("ask_price"), "bs": r.get("bid_size"), "as": r.get("ask_size"),
         "t": r["sip_timestamp"] // NS_PER_MS, "ns": r["sip_timestamp"]}
        for r in results
        if type(r.get("sip_timestamp")) is int
    ]  # fmt: skip


def backfill_frame_text(gap_id: str, contract: str, trades: list[dict[str, Any]], quotes: list[dict[str, Any]]) -> str:
    """One journal frame: quotes and trades in SIP-time order (a quote at a trade's nanosecond comes first)."""

    def order(event: dict[str, Any]) -> tuple[int, int]:
        if event["ev"] == "Q":
            return int(event["ns"]), 0
        sip = event["rest"].get("sip_timestamp")
        return (sip if type(sip) is int else 0), 1

    events = sorted([*quotes, *trades], key=order)
    body = {"backfill": {"gap": gap_id, "contract": contract}, "events": events}
    try:
        return orjson.dumps(body).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: the exact encoder keeps it as sent
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@attrs.define
class PolygonBackfillNormalizer(PolygonNormalizer):
    """The Polygon normalizer, which also reads backfill frames: each with a fresh NBBO book of its own.

    A live frame costs one prefix comparison more; a backfill frame's events go through the same
    trade and side rules as live ones, against the REST quotes it carries, never the live book.
    """

    backfilled: int = 0

    def __call__(self, frame: ReceivedFrame) -> Normalized:
        if not frame.text.startswith(BACKFILL_PREFIX):
            return super().__call__(frame)
        try:
            body = loads_exact(frame.text)  # exact numbers, as the live path reads them
            events = body["events"]
        except (InvalidJson, KeyError, TypeError):
            return super().__call__(frame)  # not a backfill frame after all: dead-lettered as usual
        own = PolygonNormalizer(quote_max_age_ms=self.quote_max_age_ms, book=NbboBook())
        normalized = own(attrs.evolve(frame, decoded=events if isinstance(events, list) else None))
        self.backfilled += own.trades
        return normalized
