"""The backfill service: when a feed's gap closes, fetch what the stream missed from the vendor's REST API.

One service per feed that has a backfiller (``feed.backfill``). The gap ledger calls ``on_closed`` on
the trio thread; the service captures, right then, what the live stream saw around the gap (the
connection before it and the one after are known only at that moment), and queues the gap. Gaps are
backfilled one after the other, each once its ``settle_s`` has passed (so the new connection's first
trades, and the vendor's REST index, have caught up). What it fetches is emitted into the feed's
journal as frames of the same feed, so it reaches the database through the same normalizer and
writers, durable and idempotent like any received frame; the outcome (``done``, ``partial``,
``unavailable``, ``not_applicable``) and the rows are recorded on the gap.

Rules and their residual risks: ``docs/backfill.md``.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol

import attrs
import orjson
import trio

from bridge.adapters.backfill.benzinga import BenzingaNews
from bridge.adapters.backfill.polygon import PolygonRest, TooManyPages
from bridge.adapters.backfill.rest import NotEntitled, RestFailed
from bridge.domain.backfill import (
    NS_PER_MS,
    ConnectionTrades,
    Edge,
    LiveTrades,
    backfill_frame_text,
    bounds_for,
    missed_trades,
    quote_events,
    trade_events,
)
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink
from bridge.logs import get_logger

log = get_logger(__name__, component="backfill")

TRADES_PER_FRAME: Final = 2000
DETAIL_MAX_CHARS: Final = 2000


class Gap(Protocol):
    """What the ledger hands over when a gap closes (``bridge.app.gaps.FeedGap``)."""

    @property
    def id(self) -> Any: ...
    @property
    def feed(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def ended_at(self) -> datetime: ...
    @property
    def reason(self) -> str: ...


class GapLedger(Protocol):
    def on_closed(self, callback: Callable[[Any], None]) -> None: ...

    async def record_backfill(self, gap_id: Any, feed: str, status: str, rows: int, detail: str) -> None: ...


@attrs.frozen
class BackfillResult:
    status: str
    """``done``, ``partial``, ``unavailable`` or ``not_applicable``."""
    rows: int
    detail: str


class Backfiller(Protocol):
    feed: str
    settle_s: float

    def prepare(self, gap: Gap) -> object:
        """Called on the trio thread as the gap closes: capture what the backfill will need of the stream."""
        ...

    async def run(self, gap: Gap, prepared: object, sink: FrameSink) -> BackfillResult: ...


@attrs.frozen
class _PrepareFailed:
    reason: str


async def serve_backfill(
    backfiller: Backfiller,
    ledger: GapLedger,
    sink: FrameSink,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Backfill ``backfiller.feed``'s gaps as they close, in order, until cancelled."""
    send, receive = trio.open_memory_channel[tuple[Gap, object, float]](math.inf)

    def closed(gap: Gap) -> None:
        if gap.feed != backfiller.feed:
            return
        try:
            prepared = backfiller.prepare(gap)
        except Exception as exc:  # a bug must not break the ledger's callback; the gap records it
            log.exception("preparing a backfill failed", feed=gap.feed)
            prepared = _PrepareFailed(f"backfill could not start: {type(exc).__name__}: {exc}")
        send.send_nowait((gap, prepared, trio.current_time()))

    ledger.on_closed(closed)
    task_status.started()
    async with receive:
        async for gap, prepared, closed_at in receive:
            await trio.sleep_until(closed_at + backfiller.settle_s)
            try:
                if isinstance(prepared, _PrepareFailed):
                    result = BackfillResult("partial", 0, prepared.reason)
                else:
                    result = await backfiller.run(gap, prepared, sink)
            except Exception as exc:
                log.exception("backfill failed", feed=gap.feed)
                result = BackfillResult("partial", 0, f"backfill failed: {type(exc).__name__}: {exc}")
            log.info("gap backfilled", feed=gap.feed, status=result.status, rows=result.rows, detail=result.detail)
            await ledger.record_backfill(gap.id, gap.feed, result.status, result.rows, result.detail[:DETAIL_MAX_CHARS])


async def serve_backfills(
    backfillers: Sequence[Backfiller],
    ledger: GapLedger,
    sink: FrameSink,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One ``serve_backfill`` per backfiller (``feed.backfill`` of each feed that has one)."""
    async with trio.open_nursery() as nursery:
        for backfiller in backfillers:
            await nursery.start(serve_backfill, backfiller, ledger, sink)
        task_status.started()


def backfillers_of(feeds: Sequence[object]) -> list[Backfiller]:
    return [backfill for feed in feeds if (backfill := getattr(feed, "backfill", None)) is not None]


def _ms(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=at.tzinfo)) // timedelta(milliseconds=1)


# -- Polygon ---------------------------------------------------------------------------------------------


@attrs.frozen
class PolygonPrepared:
    contracts: tuple[str, ...]
    before: dict[str, Edge]
    after: ConnectionTrades | None
    reconnected: bool


@attrs.define
class PolygonBackfiller:
    """Trades of the gap for the configured contracts and the most recently traded, from ``/v3/trades``."""

    live: LiveTrades
    rest: Callable[[], PolygonRest]
    clock: Clock
    contracts: tuple[str, ...] = ()
    max_contracts: int = 100
    quote_max_age_ms: int = 5000
    settle_s: float = 1.0
    feed: str = "polygon"
    gaps_seen: int = 0
    gaps_done: int = 0

    def prepare(self, gap: Gap) -> PolygonPrepared:
        self.gaps_seen += 1
        current = self.live.current
        reconnected = current is not None and current.started_at >= gap.started_at
        pinned = tuple(dict.fromkeys(self.contracts))[: self.max_contracts]
        recent = self.live.most_recent(self.max_contracts - len(pinned), frozenset(pinned))
        contracts = (*pinned, *recent)
        before = {c: edge for c in contracts if (edge := self.live.last_edge(c)) is not None}
        return PolygonPrepared(contracts, before, current if reconnected else None, reconnected)

    async def run(self, gap: Gap, prepared: object, sink: FrameSink) -> BackfillResult:
        try:
            return await self._run(gap, prepared, sink)
        finally:
            self.gaps_done += 1

    async def _run(self, gap: Gap, prepared: object, sink: FrameSink) -> BackfillResult:
        assert isinstance(prepared, PolygonPrepared)
        if not prepared.reconnected:
            return BackfillResult("not_applicable", 0, "the stream's connection stayed up through the gap")
        if not prepared.contracts:
            return BackfillResult("not_applicable", 0, "no contract to backfill (none configured, none traded yet)")
        after = prepared.after
        start_ms, end_ms = _ms(gap.started_at), _ms(gap.ended_at)
        if after is not None and after.first_ms is not None:
            end_ms = max(end_ms, after.first_ms)  # the new subscription was in effect by its first trade
        rest = self.rest()
        rows, failures, notes = 0, [], []
        quotes_entitled = True
        try:
            for contract in prepared.contracts:
                first = after.first_edge(contract) if after is not None else None
                bounds = bounds_for(contract, prepared.before.get(contract), first, start_ms, end_ms)
                if bounds is None:
                    continue
                try:
                    results = await rest.trades(contract, bounds.gte_ns, bounds.lt_ns)
                except NotEntitled as exc:
                    status = "partial" if rows else "unavailable"
                    return BackfillResult(status, rows, f"the plan has no access to /v3/trades: {exc}")
                except TooManyPages as exc:
                    results = exc.results
                    failures.append(f"{contract}: {exc}")
                except RestFailed as exc:
                    failures.append(f"{contract}: {exc}")
                    continue
                missed = trade_events(contract, missed_trades(bounds, results), results)
                if not missed:
                    continue
                quotes: list[dict[str, Any]] = []
                times = [sip for event in missed if type(sip := event["rest"].get("sip_timestamp")) is int]
                if quotes_entitled and times:
                    low, high = min(times) - self.quote_max_age_ms * NS_PER_MS, max(times) + 1
                    try:
                        quotes = quote_events(contract, await rest.quotes(contract, low, high))
                    except NotEntitled as exc:
                        quotes_entitled = False
                        notes.append(f"no quotes (sides unknown): {exc}")
                    except (RestFailed, TooManyPages) as exc:
                        notes.append(f"{contract}: no quotes (sides unknown): {exc}")
                await self._emit(sink, str(gap.id), contract, missed, quotes)
                rows += len(missed)
        finally:
            with trio.CancelScope(shield=True):
                await rest.aclose()
        detail = f"{rows} trades of {len(prepared.contracts)} contracts from REST"
        detail = "; ".join([detail, *notes, *failures])
        return BackfillResult("partial" if failures else "done", rows, detail)

    async def _emit(
        self, sink: FrameSink, gap_id: str, contract: str, trades: list[dict[str, Any]], quotes: list[dict[str, Any]]
    ) -> None:
        """The contract's trades in frames of ``TRADES_PER_FRAME``, each with the quotes its trades may use."""
        quote_ns = [quote["ns"] for quote in quotes]
        for start in range(0, len(trades), TRADES_PER_FRAME):
            chunk = trades[start : start + TRADES_PER_FRAME]
            times = [sip for event in chunk if type(sip := event["rest"].get("sip_timestamp")) is int]
            window: list[dict[str, Any]] = []
            if times:  # a trade without a usable time is dead-lettered by the normalizer: it needs no quote
                low, high = min(times) - self.quote_max_age_ms * NS_PER_MS, max(times)
                window = quotes[bisect.bisect_left(quote_ns, low) : bisect.bisect_right(quote_ns, high)]
            text = backfill_frame_text(gap_id, contract, chunk, window)
            await sink.emit(ReceivedFrame(self.feed, self.clock(), text))


# -- Benzinga --------------------------------------------------------------------------------------------


@attrs.frozen
class BenzingaPrepared:
    newest_before: datetime | None
    replay_covered: Callable[[], bool]


@attrs.define
class BenzingaBackfiller:
    """News updated since a few seconds before the newest update seen, when the stream's replay fell short."""

    news: Callable[[], BenzingaNews]
    clock: Clock
    newest_seen: Callable[[], datetime | None]
    replay_covered: Callable[[], bool]
    """Called after ``settle_s``: whether the reconnect's replay reached back to what was seen before."""
    overlap_s: float = 5.0
    settle_s: float = 3.0
    feed: str = "benzinga"
    gaps_seen: int = 0
    gaps_done: int = 0

    def prepare(self, gap: Gap) -> BenzingaPrepared:
        self.gaps_seen += 1
        return BenzingaPrepared(self.newest_seen(), self.replay_covered)

    async def run(self, gap: Gap, prepared: object, sink: FrameSink) -> BackfillResult:
        try:
            return await self._run(gap, prepared, sink)
        finally:
            self.gaps_done += 1

    async def _run(self, gap: Gap, prepared: object, sink: FrameSink) -> BackfillResult:
        assert isinstance(prepared, BenzingaPrepared)
        if prepared.replay_covered():
            return BackfillResult("not_applicable", 0, "the stream's replay covered the gap")
        since = prepared.newest_before or gap.started_at
        since -= timedelta(seconds=self.overlap_s)
        news = self.news()
        try:
            articles = await news.updated_since(since)
        except NotEntitled as exc:
            return BackfillResult("unavailable", 0, f"the plan has no access to /api/v2/news: {exc}")
        except RestFailed as exc:
            return BackfillResult("partial", 0, f"/api/v2/news failed: {exc}")
        finally:
            with trio.CancelScope(shield=True):
                await news.aclose()
        for article in articles:
            await sink.emit(ReceivedFrame(self.feed, self.clock(), orjson.dumps(stream_message(article)).decode()))
        return BackfillResult("done", len(articles), f"{len(articles)} articles updated since {since.isoformat()}")


def stream_message(article: dict[str, Any]) -> dict[str, Any]:
    """A REST article (``/api/v2/news``) as the stream's newer message shape, for the same normalizer.

    Its time is the end of the second REST gives (RFC 2822 has whole seconds): the article's state then is
    at least as new as any stream message of that second, so a live message of an older revision in the
    same second does not make the normalizer take the REST state for the older one.
    """
    updated = article.get("updated") or article.get("created")
    if isinstance(updated, str):
        with contextlib.suppress(TypeError, ValueError, IndexError):
            moment = parsedate_to_datetime(updated)
            if moment.tzinfo is not None and moment.microsecond == 0:
                updated = (moment + timedelta(microseconds=999_999)).isoformat()
    return {
        "api_version": "websocket/v1",
        "kind": "news",
        "data": {"action": "updated", "id": article.get("id"), "timestamp": updated, "content": article},
        "backfill": True,
    }

