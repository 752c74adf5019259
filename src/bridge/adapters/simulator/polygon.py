"""A local Polygon/Massive options WebSocket: the documented handshake, then batched trades and quotes.

Speaks the protocol the ``polygon`` feed expects: a status event on open (``connect_event``: the
service's ``connected`` array by default, or ``SPEC_CONNECT_EVENT``, the connect event exactly as the
vendor's websocket spec gives it), ``auth`` answered
with ``auth_success`` or ``auth_failed`` (then the connection is closed), ``subscribe`` and
``unsubscribe`` acknowledged per channel. Trades are sent for ``T.*`` (or ``T.<contract>``), quotes
only for the contracts subscribed with ``Q.<contract>``, as the real service limits quotes per
connection (``quote_limit``: going beyond it is answered with an ``error`` status and counted).
The scenario is deterministic and shared by all connections, so a reconnecting client resumes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.oauth import serve_rest
from bridge.adapters.simulator.polygon_market import PolygonMarket
from bridge.adapters.simulator.server import SentLog, serve_loopback

EXCHANGES: Final = (300, 301, 302, 303, 304, 307, 308, 309, 312, 313, 315, 316, 319, 322, 323, 325)
ROOTS: Final = (("SPY", 600.0, 1.0), ("QQQ", 520.0, 1.0), ("SPXW", 6000.0, 5.0), ("AAPL", 230.0, 2.5),
                ("TSLA", 350.0, 5.0), ("NVDA", 180.0, 1.0), ("IWM", 240.0, 1.0))  # fmt: skip


def _status(status: str, message: str) -> str:
    return orjson.dumps([{"ev": "status", "status": status, "message": message}]).decode()


CONNECTED_EVENT: Final = _status("connected", "Connected Successfully")
"""What the service (and the vendor's own client-library mock server) sends first."""
SPEC_CONNECT_EVENT: Final = '{"ev":"status","status":"success","message":"Connected Successfully"}'
"""The vendor's websocket spec's example of the connect event (``ConnectEvent``): ``success``, no array."""


class PolygonScenario:
    """An endless OPRA session over ``contracts`` contracts: quotes and trades (Unix ms).

    Deterministic for a seed and a ``start``; ``start`` defaults to now, so that event times pass
    the bridge's plausibility window whenever the scenario runs.
    """

    def __init__(
        self,
        seed: int = 0,
        start: datetime | None = None,
        contracts: int = 200,
        quote_share: float = 0.6,
        ms_per_event: float | None = None,
    ):
        self.rng = random.Random(seed)
        start = start or datetime.now(UTC)
        self.at_ms = int(start.timestamp() * 1000)
        self.quote_share = quote_share
        self.ms_per_event = ms_per_event
        """Event time per event, for a sender at a known rate (a long run at full speed would otherwise
        run ahead of the wall clock and the bridge would rightly refuse its times); ``None``: 0-5 ms."""
        self._elapsed_ms = 0.0
        first_friday = start.date()
        first_friday += timedelta(days=(4 - first_friday.weekday()) % 7 or 7)
        self.contracts: list[str] = []
        self.mids: dict[str, float] = {}
        self.sequence: Counter[str] = Counter()
        for _ in range(contracts):
            root, spot, step = self.rng.choice(ROOTS)
            expiration = first_friday + timedelta(weeks=self.rng.randint(0, 6))
            kind = self.rng.choice("CP")
            strike = round(spot / step + self.rng.randint(-15, 15)) * step
            ticker = f"O:{root}{expiration:%y%m%d}{kind}{round(strike * 1000):08d}"
            if ticker not in self.mids:
                self.contracts.append(ticker)
                self.mids[ticker] = max(0.05, spot * 0.015 * math.exp(-abs(spot - strike) / (spot * 0.04)))

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        while True:
            if self.ms_per_event is None:
                self.at_ms += rng.choice((0, 1, 1, 2, 5))
            else:
                self._elapsed_ms += self.ms_per_event
                step = int(self._elapsed_ms)
                self.at_ms += step
                self._elapsed_ms -= step
            yield self.event_at(self.at_ms)

    def event_at(self, at_ms: int) -> dict[str, Any]:
        """The session's next event (a quote or a trade of a random contract), stamped ``at_ms``."""
        rng = self.rng
        ticker = rng.choice(self.contracts)
        mid = self.mids[ticker] = max(0.05, self.mids[ticker] * math.exp(rng.gauss(0, 0.002)))
        half = max(0.01, round(mid * 0.02, 2))
        bid, ask = round(max(0.0, mid - half), 2), round(mid + half, 2)
        self.sequence[ticker] += 1
        if rng.random() < self.quote_share:
            return {"ev": "Q", "sym": ticker, "bx": rng.choice(EXCHANGES), "ax": rng.choice(EXCHANGES),
                    "bp": bid, "ap": ask, "bs": rng.randint(1, 500), "as": rng.randint(1, 500),
                    "t": at_ms, "q": self.sequence[ticker]}  # fmt: skip
        price = rng.choice((bid, ask, ask, round((bid + ask) / 2, 3), round(ask + 0.01, 2)))
        return {"ev": "T", "sym": ticker, "x": rng.choice(EXCHANGES), "p": price,
                "s": min(int(rng.paretovariate(1.2)), 10_000), "c": [rng.choice((209, 219, 227, 233))],
                "t": at_ms, "q": self.sequence[ticker]}  # fmt: skip


@attrs.frozen
class PolygonFrame:
    """One server frame encoded ahead of time, with what a send needs to know without decoding it."""

    text: str
    trades: int
    quotes: int
    quote_channels: frozenset[str]
    """``Q.<contract>`` for every quote in it: sent as is only when the client holds them all."""


def prebuilt_frames(scenario: PolygonScenario, total_trades: int, batch_size: int = 100) -> list[PolygonFrame]:
    """``total_trades`` trades (and the quotes between them) as frames encoded once, for benchmarks.

    A server sending these spends its time on the socket, not on generating JSON, so a benchmark on
    one machine measures the bridge rather than the simulator.
    """
    frames: list[PolygonFrame] = []
    events = scenario.events()
    trades = 0
    while trades < total_trades:
        batch: list[dict[str, Any]] = []
        in_batch = 0
        while len(batch) < batch_size and trades + in_batch < total_trades:
            event = next(events)
            batch.append(event)
            in_batch += event["ev"] == "T"
        trades += in_batch
        channels = frozenset(f"Q.{event['sym']}" for event in batch if event["ev"] == "Q")
        frames.append(PolygonFrame(orjson.dumps(batch).decode(), in_batch, len(batch) - in_batch, channels))
    return frames


MAX_CONNECTIONS_MESSAGE: Final = (
    "Maximum number of websocket connections exceeded. You have reached the connection limit for your account."
    " Please contact support at https://polygon.io/contact to increase your limit."
)
"""What the service says to the oldest connection of a key when a newer one authenticates."""
SUBSCRIBER_BUFFER_FRAMES: Final = 10_000
"""Frames a market-mode connection may fall behind before the server drops it (a slow consumer)."""


@attrs.define
class _Subscriber:
    channels: set[str]
    send: trio.MemorySendChannel[list[dict[str, Any]]]
    overflow: trio.Event = attrs.Factory(trio.Event)

    def offer(self, batch: list[dict[str, Any]]) -> None:
        wanted = [event for event in batch if _wanted(self.channels, event)]
        if wanted:
            try:
                self.send.send_nowait(wanted)
            except trio.WouldBlock:
                self.overflow.set()


def _wanted(channels: set[str], event: dict[str, Any]) -> bool:
    kind = event["ev"]
    return f"{kind}.*" in channels or f"{kind}.{event['sym']}" in channels


async def serve_polygon_simulator(
    *,
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 0,
    events_per_second: float | None = 5000,
    batch_size: int = 100,
    total_trades: int | None = None,
    disconnect_every_frames: int | None = None,
    quote_limit: int = 1000,
    contracts: int = 200,
    seed: int = 0,
    start: datetime | None = None,
    log: SentLog | None = None,
    frames: Iterable[PolygonFrame] | None = None,
    connect_event: str = CONNECTED_EVENT,
    market: PolygonMarket | None = None,
    keep_trading: bool = True,
    open_at_first_subscription: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the ``ws://`` URL. ``log`` counts trades as
    ``options_flow`` messages and keeps ``extra['quotes']``, ``extra['max_quote_subscriptions']``.

    With a rate (``events_per_second``) and no ``frames``, the market keeps trading whether anybody is
    connected (``keep_trading``, as the vendor's does): events are stamped with the market's clock
    (``start`` plus the time elapsed) and a connection gets those that happen while it is subscribed;
    ``total_trades`` then bounds the trades that happen, not those sent. Given ``market``, every event
    is kept there and served on REST on a side port (``market.base_url``; see ``polygon_market``).
    Without a rate the scenario is streamed as fast as a connection reads it, pausing in between.
    ``open_at_first_subscription`` holds the market's first trade until a client has subscribed (so a
    test can expect every trade of the session to land, none happening before the bridge existed).

    ``frames`` (from ``prebuilt_frames``) replaces the generated scenario: they are sent in order,
    over all connections, and then the server goes quiet; quotes for contracts the client has not
    subscribed are still filtered out, as the real service does.

    One connection per key: when a second one authenticates, the first gets a ``max_connections``
    status and is closed, as the service does.
    """
    sent = log if log is not None else SentLog()
    scenario_start = start or datetime.now(UTC)
    scenario = PolygonScenario(seed, scenario_start, contracts=contracts)
    opened = trio.current_time()
    events = scenario.events()
    prebuilt = None if frames is None else iter(frames)
    market_mode = keep_trading and events_per_second is not None and frames is None
    subscribers: dict[int, _Subscriber] = {}
    by_key: dict[str, tuple[Any, Any]] = {}
    connection_ids = itertools.count(1)
    first_subscription = trio.Event()

    async def run_market() -> None:
        assert events_per_second is not None
        if open_at_first_subscription:
            await first_subscription.wait()
            scenario.at_ms = int(scenario_start.timestamp() * 1000) + round((trio.current_time() - opened) * 1000)
        interval = batch_size / events_per_second
        started, last_ms = trio.current_time(), scenario.at_ms
        due, generated = started, 0
        while total_trades is None or generated < total_trades:
            due += interval
            await trio.sleep_until(due)
            now_ms = scenario.at_ms + round((trio.current_time() - started) * 1000)
            batch: list[dict[str, Any]] = []
            for index in range(batch_size):
                event = scenario.event_at(last_ms + (now_ms - last_ms) * (index + 1) // batch_size)
                if event["ev"] == "T":
                    if total_trades is not None and generated >= total_trades:
                        break
                    generated += 1
                batch.append(event)
                if market is not None:
                    market.record(event)
            last_ms = now_ms
            sent.extra["trades_generated"] = generated
            for subscriber in list(subscribers.values()):
                subscriber.offer(batch)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        sent.connections += 1
        connection = next(connection_ids)
        send_lock = trio.Lock()
        channels: set[str] = set()
        subscribed = trio.Event()

        async def send(text: str) -> None:
            async with send_lock:
                await ws.send_message(text)

        async def evict_older_connection() -> None:
            older = by_key.get(api_key)
            by_key[api_key] = (ws, send)
            if older is None or older[0].closed is not None:
                return
            sent.extra["max_connections"] += 1
            with contextlib.suppress(ConnectionClosed):
                await older[1](_status("max_connections", MAX_CONNECTIONS_MESSAGE))
                await older[0].aclose(code=1008, reason="max_connections")

        try:
            await send(connect_event)
            with trio.move_on_after(10) as auth_wait:
                auth = orjson.loads(await ws.get_message())
            if auth_wait.cancelled_caught:
                sent.extra["auth_timeout"] += 1
                await send(_status("auth_timeout", "no auth message"))
                await ws.aclose()
                return
            if auth.get("action") != "auth" or auth.get("params") != api_key:
                await send(_status("auth_failed", "authentication failed"))
                sent.extra["auth_failed"] += 1
                await ws.aclose(code=1008, reason="authentication failed")
                return
            await evict_older_connection()
            await send(_status("auth_success", "authenticated"))

            async def read_subscriptions() -> None:
                while True:
                    request_ = orjson.loads(await ws.get_message())
                    action, params = request_.get("action"), str(request_.get("params", ""))
                    for channel in filter(None, params.split(",")):
                        if action == "subscribe":
                            quotes = sum(1 for c in channels if c.startswith("Q."))
                            if channel.startswith("Q.") and channel not in channels and quotes >= quote_limit:
                                sent.extra["quote_limit_exceeded"] += 1
                                await send(_status("error", f"quote subscription limit {quote_limit} reached"))
                                continue
                            channels.add(channel)
                            await send(_status("success", f"subscribed to: {channel}"))
                        elif action == "unsubscribe":
                            channels.discard(channel)
                            await send(_status("success", f"unsubscribed to: {channel}"))
                    quotes = sum(1 for c in channels if c.startswith("Q."))
                    sent.extra["max_quote_subscriptions"] = max(sent.extra["max_quote_subscriptions"], quotes)
                    if any(c.startswith("T.") for c in channels):
                        subscribed.set()
                        first_subscription.set()

            def wanted(event: dict[str, Any]) -> bool:
                return _wanted(channels, event)

            def generated() -> tuple[str, list[dict[str, Any]], int, int] | None:
                left = None if total_trades is None else total_trades - sent.messages_by_table["options_flow"]
                if left is not None and left <= 0:
                    return None
                batch: list[dict[str, Any]] = []
                trades = 0
                while len(batch) < batch_size and (left is None or trades < left):
                    event = next(events)
                    if not wanted(event):
                        continue  # not subscribed: the real service would not send it either
                    batch.append(event)
                    trades += event["ev"] == "T"
                return orjson.dumps(batch).decode(), batch, trades, len(batch) - trades

            def next_prebuilt(frames: Iterator[PolygonFrame]) -> tuple[str, list[dict[str, Any]], int, int] | None:
                frame = next(frames, None)
                if frame is None:
                    return None
                if "T.*" in channels and frame.quote_channels <= channels:
                    batch = orjson.loads(frame.text) if sent.keep_messages else []
                    return frame.text, batch, frame.trades, frame.quotes
                batch = [event for event in orjson.loads(frame.text) if wanted(event)]
                trades = sum(event["ev"] == "T" for event in batch)
                return orjson.dumps(batch).decode(), batch, trades, len(batch) - trades

            async def stream() -> None:
                await subscribed.wait()
                frames_here = 0
                next_due = trio.current_time()
                while disconnect_every_frames is None or frames_here < disconnect_every_frames:
                    made = generated() if prebuilt is None else next_prebuilt(prebuilt)
                    if made is None:
                        await trio.sleep_forever()
                        return
                    text, batch, trades, quotes = made
                    if events_per_second is not None:
                        next_due = max(next_due, trio.current_time() - 1) + (trades + quotes) / events_per_second
                        await trio.sleep_until(next_due)
                    else:
                        await trio.lowlevel.checkpoint()
                    await send(text)
                    sent.record_good(batch, {"options_flow": trades})
                    sent.extra["quotes"] += quotes
                    frames_here += 1
                await ws.aclose(code=1001, reason="simulated disconnect")

            async def stream_market() -> None:
                send_batches, batches = trio.open_memory_channel[list[dict[str, Any]]](SUBSCRIBER_BUFFER_FRAMES)
                subscriber = subscribers[connection] = _Subscriber(channels, send_batches)
                frames_here = 0
                async with trio.open_nursery() as watch:

                    async def drop_when_slow() -> None:
                        await subscriber.overflow.wait()
                        sent.extra["slow_consumer"] += 1
                        await ws.aclose(code=1008, reason="slow consumer")

                    watch.start_soon(drop_when_slow)
                    while disconnect_every_frames is None or frames_here < disconnect_every_frames:
                        batch = await batches.receive()
                        await send(orjson.dumps(batch).decode())
                        trades = sum(event["ev"] == "T" for event in batch)
                        sent.record_good(batch, {"options_flow": trades})
                        sent.extra["quotes"] += len(batch) - trades
                        frames_here += 1
                    subscribers.pop(connection, None)
                    await ws.aclose(code=1001, reason="simulated disconnect")
                    watch.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_subscriptions)
                await (stream_market() if market_mode else stream())
                nursery.cancel_scope.cancel()
        except* ConnectionClosed:
            pass  # the client went away (or we closed it): this connection is over
        finally:
            subscribers.pop(connection, None)
            if by_key.get(api_key, (None,))[0] is ws:
                del by_key[api_key]

    async with trio.open_nursery() as nursery:
        if market is not None:
            rest_port = await nursery.start(functools.partial(serve_rest, market.routes(), host=host))
            market.base_url = f"http://{host}:{rest_port}"
        if market_mode:
            nursery.start_soon(run_market)
        url = await nursery.start(functools.partial(serve_loopback, handler, host=host, port=port, path="/options"))
        task_status.started(url)


__all__ = [
    "CONNECTED_EVENT",
    "MAX_CONNECTIONS_MESSAGE",
    "SPEC_CONNECT_EVENT",
    "PolygonFrame",
    "PolygonMarket",
    "PolygonScenario",
    "SentLog",
    "prebuilt_frames",
    "serve_polygon_simulator",
]
