"""The Polygon simulator's market: trades and quotes happen on a clock, connected or not, and REST serves them.

A ``PolygonMarket`` is what a real options feed is to its clients: events are stamped with the
market's time as they happen, whether anybody is connected; connected clients get the ones they
subscribed, and the REST API answers for all of them afterwards:

* ``GET /v3/trades/{optionsTicker}``: results ``conditions``, ``exchange``, ``participant_timestamp``,
  ``price``, ``sip_timestamp`` (ns), ``size`` (no sequence number, as the vendor documents for options);
* ``GET /v3/quotes/{optionsTicker}``: ``ask_exchange``, ``ask_price``, ``ask_size``, ``bid_exchange``,
  ``bid_price``, ``bid_size``, ``sequence_number``, ``sip_timestamp``;
* both with ``timestamp`` / ``timestamp.gte|gt|lte|lt`` (nanoseconds, ISO-8601 or a date), ``order``
  (``asc``/``desc``), ``limit`` (1-50,000, default 1,000), ``sort=timestamp``, and ``next_url`` paging by
  ``cursor``; the key as ``apiKey`` or ``Authorization: Bearer``.

Modes a test sets on the market: ``rate_limited_requests`` (the next N requests get HTTP 429),
``rest_entitled=False`` (every endpoint answers ``NOT_AUTHORIZED`` as a plan without REST does) and
``quotes_entitled=False`` (only quotes are refused).
"""

from __future__ import annotations

import base64
import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import attrs
import orjson

from bridge.adapters.simulator.oauth import Request, Response, Route

NOT_AUTHORIZED_MESSAGE: Final = "You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing"
RATE_LIMIT_MESSAGE: Final = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue."
    " https://polygon.io/pricing"
)
MAX_LIMIT: Final = 50_000


@attrs.define
class PolygonMarket:
    """Everything that traded and was quoted, per contract, in SIP-time order; and how REST answers."""

    api_key: str
    base_url: str = ""
    """Set by the simulator once the REST port is known (``next_url`` points there)."""
    rate_limited_requests: int = 0
    rest_entitled: bool = True
    quotes_entitled: bool = True
    requests: Counter[str] = attrs.Factory(Counter)
    trades: defaultdict[str, list[dict[str, Any]]] = attrs.Factory(lambda: defaultdict(list))
    quotes: defaultdict[str, list[dict[str, Any]]] = attrs.Factory(lambda: defaultdict(list))
    _last_ns: int = 0
    _ids: Iterator[int] = attrs.Factory(lambda: itertools.count(1))

    def record(self, event: dict[str, Any]) -> None:
        """A stream event as the REST API keeps it (its SIP time in ns, within the event's millisecond)."""
        at_ns = max(event["t"] * 1_000_000, self._last_ns + 1)
        self._last_ns = at_ns
        if event["ev"] == "T":
            self.trades[event["sym"]].append({
                "conditions": event["c"], "exchange": event["x"], "participant_timestamp": at_ns - 1_000,
                "price": event["p"], "sip_timestamp": at_ns, "size": event["s"],
            })  # fmt: skip
        else:
            self.quotes[event["sym"]].append({
                "ask_exchange": event["ax"], "ask_price": event["ap"], "ask_size": event["as"],
                "bid_exchange": event["bx"], "bid_price": event["bp"], "bid_size": event["bs"],
                "sequence_number": event["q"], "sip_timestamp": at_ns,
            })  # fmt: skip

    def all_trades(self) -> int:
        return sum(len(trades) for trades in self.trades.values())

    # -- REST ------------------------------------------------------------------------------------------

    def routes(self) -> Mapping[str, Route]:
        return _PrefixRoutes({"/v3/trades/": self._trades, "/v3/quotes/": self._quotes})

    async def _trades(self, request: Request) -> Response:
        return self._answer(request, "trades", self.trades)

    async def _quotes(self, request: Request) -> Response:
        return self._answer(request, "quotes", self.quotes)

    def _answer(self, request: Request, kind: str, store: Mapping[str, list[dict[str, Any]]]) -> Response:
        self.requests[kind] += 1
        request_id = f"sim{next(self._ids):08x}"
        given = request.query.get("apiKey") or _bearer(request.headers.get("authorization", ""))
        if given != self.api_key:
            return _json(401, {"status": "ERROR", "request_id": request_id, "error": "Unknown API Key"})
        if self.rate_limited_requests > 0:
            self.rate_limited_requests -= 1
            self.requests["rate_limited"] += 1
            return _json(429, {"status": "ERROR", "request_id": request_id, "error": RATE_LIMIT_MESSAGE})
        if not self.rest_entitled or (kind == "quotes" and not self.quotes_entitled):
            return _json(403, {"status": "NOT_AUTHORIZED", "request_id": request_id, "message": NOT_AUTHORIZED_MESSAGE})
        ticker = request.path.rsplit("/", 1)[1].replace("%3A", ":").replace("%3a", ":")
        query = dict(request.query)
        if "cursor" in query:
            try:
                query = orjson.loads(base64.urlsafe_b64decode(query["cursor"]))
            except ValueError:
                return _json(400, {"status": "ERROR", "request_id": request_id, "error": "invalid cursor"})
        try:
            low, high = _range(query)
            limit = int(query.get("limit", 1000))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
            order = query.get("order", "asc")
            if order not in ("asc", "desc"):
                raise ValueError("order must be asc or desc")
            skip = int(query.get("skip", 0))
        except ValueError as exc:
            return _json(400, {"status": "ERROR", "request_id": request_id, "error": str(exc)})
        items = store.get(ticker, [])
        times = [item["sip_timestamp"] for item in items]
        selected = items[bisect.bisect_left(times, low) : bisect.bisect_left(times, high)]
        if order == "desc":
            selected = selected[::-1]
        page = selected[skip : skip + limit]
        body: dict[str, Any] = {"results": page, "status": "OK", "request_id": request_id}
        if skip + limit < len(selected):
            cursor = {**query, "skip": skip + limit}
            token = base64.urlsafe_b64encode(orjson.dumps(cursor)).decode()
            body["next_url"] = f"{self.base_url}/v3/{kind}/{ticker}?cursor={token}"
        return _json(200, body)


class _PrefixRoutes(Mapping[str, Route]):
    """``serve_rest`` looks routes up by exact path: these answer for every path under a prefix."""

    def __init__(self, prefixes: dict[str, Route]) -> None:
        self._prefixes = prefixes

    def __getitem__(self, path: str) -> Route:
        for prefix, route in self._prefixes.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return route
        raise KeyError(path)

    def __iter__(self) -> Iterator[str]:
        return iter(self._prefixes)

    def __len__(self) -> int:
        return len(self._prefixes)


def _bearer(header: str) -> str | None:
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _json(status: int, body: object) -> Response:
    return Response(status, orjson.dumps(body))


def _ns(value: str) -> int:
    """A ``timestamp`` filter value: nanoseconds, an ISO-8601 time, or a date (its midnight, UTC)."""
    if value.isdigit():
        return int(value)
    if len(value) == 10:
        day = date.fromisoformat(value)
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (int(at.timestamp()) * 1_000_000 + at.microsecond) * 1_000


def _range(query: Mapping[str, Any]) -> tuple[int, int]:
    """``[low, high)`` in nanoseconds from the ``timestamp`` filters."""
    low, high = 0, 2**63
    if "timestamp" in query:
        exact = _ns(str(query["timestamp"]))
        low, high = exact, exact + 1
    for name, value in query.items():
        if not name.startswith("timestamp."):
            continue
        ns = _ns(str(value))
        operator = name.split(".", 1)[1]
        if operator == "gte":
            low = max(low, ns)
        elif operator == "gt":
            low = max(low, ns + 1)
        elif operator == "lte":
            high = min(high, ns + 1)
        elif operator == "lt":
            high = min(high, ns)
        else:
            raise ValueError(f"unknown filter {name}")
    return low, high
