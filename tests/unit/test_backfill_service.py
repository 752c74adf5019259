"""The backfill service and the Polygon backfiller's outcomes, against in-memory fakes on trio's virtual clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson
import trio
import trio.testing

from bridge.adapters.backfill.polygon import TooManyPages
from bridge.adapters.backfill.rest import NotEntitled, RestFailed
from bridge.app.backfill import BackfillResult, PolygonBackfiller, serve_backfill
from bridge.domain.backfill import LiveTrades
from bridge.domain.models import ReceivedFrame

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)
SYM = "O:SPY261218C00650000"


@attrs.frozen
class Gap:
    id: uuid.UUID
    feed: str
    started_at: datetime
    ended_at: datetime
    reason: str = "StreamClosed"


@attrs.define
class Ledger:
    callbacks: list[Any] = attrs.Factory(list)
    recorded: list[tuple[Any, ...]] = attrs.Factory(list)

    def on_closed(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def close(self, gap: Gap) -> None:
        for callback in self.callbacks:
            callback(gap)

    async def record_backfill(self, gap_id: Any, feed: str, status: str, rows: int, detail: str) -> None:
        self.recorded.append((gap_id, feed, status, rows, detail, trio.current_time()))


@attrs.define
class Sink:
    frames: list[ReceivedFrame] = attrs.Factory(list)

    async def emit(self, frame: ReceivedFrame) -> None:
        self.frames.append(frame)

    def connected(self, feed: str) -> None:
        pass


def gap(n: int = 0, feed: str = "polygon") -> Gap:
    return Gap(uuid.UUID(int=n), feed, T0 + timedelta(seconds=n), T0 + timedelta(seconds=n, milliseconds=300))


@attrs.define
class Scripted:
    feed: str = "polygon"
    settle_s: float = 2.0
    prepared: list[Any] = attrs.Factory(list)

    def prepare(self, gap: Gap) -> object:
        self.prepared.append((gap.id, trio.current_time()))
        if gap.id.int == 3:
            raise ValueError("broken")
        return gap.id.int

    async def run(self, gap: Gap, prepared: object, sink: Any) -> BackfillResult:
        if prepared == 2:
            raise RuntimeError("boom")
        await trio.sleep(1)
        return BackfillResult("done", 7, f"gap {prepared}")


async def test_gaps_are_backfilled_in_order_after_their_settle_time_and_failures_are_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ledger, backfiller = Ledger(), Scripted()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_backfill, backfiller, ledger, Sink())
        start = trio.current_time()
        for n in (1, 2, 3):
            ledger.close(gap(n))
        ledger.close(gap(9, feed="benzinga"))  # another feed's gap: not this service's
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [(g.int, status, rows) for g, _, status, rows, _, _ in ledger.recorded] == [
        (1, "done", 7), (2, "partial", 0), (3, "partial", 0)]  # fmt: skip
    assert ledger.recorded[1][4] == "backfill failed: RuntimeError: boom"
    assert ledger.recorded[2][4] == "backfill could not start: ValueError: broken"  # reported, not lost
    assert [round(at - start, 3) for *_, at in ledger.recorded] == [3.0, 3.0, 3.0]  # settle 2 s, the first ran 1 s


@attrs.define
class FakeRest:
    trades_answer: Any
    quotes_answer: Any = attrs.Factory(list)
    asked: list[tuple[str, str, int, int]] = attrs.Factory(list)
    closed: bool = False

    async def trades(self, ticker: str, gte_ns: int, lt_ns: int) -> Any:
        self.asked.append(("trades", ticker, gte_ns, lt_ns))
        if isinstance(self.trades_answer, Exception):
            raise self.trades_answer
        return self.trades_answer

    async def quotes(self, ticker: str, gte_ns: int, lt_ns: int) -> Any:
        self.asked.append(("quotes", ticker, gte_ns, lt_ns))
        if isinstance(self.quotes_answer, Exception):
            raise self.quotes_answer
        return self.quotes_answer

    async def aclose(self) -> None:
        self.closed = True


def trade(ms: int, size: int = 1) -> dict[str, Any]:
    return {"conditions": [209], "exchange": 302, "participant_timestamp": ms * 1_000_000, "price": 1.25,
            "sip_timestamp": ms * 1_000_000 + 5, "size": size}  # fmt: skip


def backfiller_after_a_reconnect(rest: FakeRest, contracts: tuple[str, ...] = ()) -> tuple[PolygonBackfiller, Gap]:
    live = LiveTrades()
    live.new_connection(T0).observe([{"ev": "T", "sym": SYM, "x": 302, "p": 1.25, "s": 1, "t": MS, "q": 1}])
    the_gap = Gap(uuid.UUID(int=1), "polygon", T0 + timedelta(milliseconds=1), T0 + timedelta(milliseconds=9))
    live.new_connection(T0 + timedelta(milliseconds=9)).observe(
        [{"ev": "T", "sym": SYM, "x": 302, "p": 1.25, "s": 9, "t": MS + 10, "q": 9}])  # fmt: skip
    backfiller = PolygonBackfiller(live=live, rest=lambda: rest, clock=lambda: T0, contracts=contracts,  # type: ignore[arg-type,return-value]
                                   max_contracts=3)  # fmt: skip
    return backfiller, the_gap


async def test_the_polygon_backfiller_fetches_between_the_live_trades_and_emits_what_was_missed() -> None:
    rest = FakeRest([trade(MS), trade(MS + 4, 2), trade(MS + 10, 9)])
    backfiller, the_gap = backfiller_after_a_reconnect(rest)
    sink = Sink()
    result = await backfiller.run(the_gap, backfiller.prepare(the_gap), sink)
    assert result == BackfillResult("done", 1, "1 trades of 1 contracts from REST")
    assert rest.asked[0] == ("trades", SYM, MS * 1_000_000, (MS + 11) * 1_000_000) and rest.closed
    (frame,) = sink.frames
    (event,) = orjson.loads(frame.text)["events"]
    assert (event["t"], event["s"], event["q"]) == (MS + 4, 2, f"rest:{(MS + 4) * 1_000_000 + 5}:1")


async def test_the_polygon_backfiller_says_why_it_could_not() -> None:
    for answer, expected in [
        (NotEntitled("You are not entitled to this data."),
         BackfillResult("unavailable", 0, "the plan has no access to /v3/trades: You are not entitled to this data.")),
        (RestFailed("HTTP 500"), BackfillResult("partial", 0, f"0 trades of 1 contracts from REST; {SYM}: HTTP 500")),
        (TooManyPages([trade(MS + 4)], 20),
         BackfillResult("partial", 1, f"1 trades of 1 contracts from REST; {SYM}: stopped after 20 pages")),
    ]:  # fmt: skip
        backfiller, the_gap = backfiller_after_a_reconnect(FakeRest(answer))
        assert await backfiller.run(the_gap, backfiller.prepare(the_gap), Sink()) == expected
    no_quotes = FakeRest([trade(MS + 4)], NotEntitled("no quotes in this plan"))
    backfiller, the_gap = backfiller_after_a_reconnect(no_quotes)
    result = await backfiller.run(the_gap, backfiller.prepare(the_gap), Sink())
    assert result.detail == "1 trades of 1 contracts from REST; no quotes (sides unknown): no quotes in this plan"
    empty = PolygonBackfiller(live=LiveTrades(), rest=lambda: no_quotes, clock=lambda: T0)  # type: ignore[arg-type,return-value]
    assert (await empty.run(the_gap, empty.prepare(the_gap), Sink())).status == "not_applicable"
