"""Feed ``polygon``: the Polygon.io / Massive options WebSocket (OPRA trades and quotes).

Protocol, as the vendor documents it: on open the server sends a status event; the client sends
``{"action": "auth", "params": KEY}`` once that first message arrived, whatever it says (the
service sends ``connected``, the vendor's spec shows ``success``, and the official clients read one
message and authenticate), and gets ``auth_success`` or ``auth_failed``; then
``{"action": "subscribe", "params": "T.*,Q.O:…"}``, each channel acknowledged by a ``success``
status. Every server frame is a JSON array of events. Quotes may be streamed for a limited number of
contracts per connection (1,000 documented), so ``Q.*`` is not possible: this feed subscribes quotes
for the configured contracts and for contracts as they start trading, dropping the least recently
traded when the limit is reached. On reconnect it authenticates and subscribes again, quotes
included. A refused key is reported and retried only after a long wait. The service allows one
connection per key and closes the older one with a ``max_connections`` status when a newer one
authenticates: that closure waits a minute before reconnecting (another process has the key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import WebSocketConnection

from bridge.adapters.feeds.websocket import (
    REJECTED_CREDENTIALS_RETRY_S,
    TOO_MANY_CONNECTIONS_RETRY_S,
    Receive,
    StreamClosed,
    WebSocketSession,
)
from bridge.domain.backfill import LiveTrades
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.domain.quote_subscriptions import QuoteSubscriptions
from bridge.domain.values import InvalidJson, loads_exact
from bridge.logs import get_logger

NAME: Final = "polygon"
DEFAULT_URL: Final = "wss://socket.massive.com/options"
ERROR_STATUSES: Final = frozenset({"auth_failed", "auth_timeout", "max_connections", "error"})
log = get_logger(__name__, feed=NAME)


class ProtocolError(Exception):
    """The server did not follow the documented handshake."""


def _events(decoded: object) -> list[dict[str, Any]]:
    """The events of a frame: an array of them, or a lone event object (as the spec's examples are)."""
    if isinstance(decoded, dict):
        return [decoded]
    return [event for event in decoded if isinstance(event, dict)] if isinstance(decoded, list) else []


def _decoded(text: str) -> object:
    """A handshake frame's JSON, or ``None`` when it is not JSON."""
    try:
        return loads_exact(text)
    except InvalidJson:
        return None


@attrs.define
class PolygonProtocol:
    api_key: str
    channels: str
    quotes: QuoteSubscriptions
    clock: Clock | None = None
    live: LiveTrades = attrs.Factory(LiveTrades)
    """The live trades per connection, for the backfill of the gaps between connections."""
    quote_messages_sent: int = 0
    evicted: str | None = None
    """The ``max_connections`` message, once the server said a newer connection with this key took over."""
    _on_server: set[str] = attrs.Factory(set)
    """Quote contracts the server currently streams for this connection."""
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        self.evicted = None
        if self.clock is not None:
            self.live.new_connection(self.clock())
        first = await receive()  # whatever it says ("connected", "success", …): the server is listening
        for event in _events(_decoded(first.text)):
            if event.get("ev") == "status":
                self._log_status(event)
        await ws.send_message(orjson.dumps({"action": "auth", "params": self.api_key}).decode())
        status, message = await self._wait_for_status(receive, {"auth_success", "auth_failed", "auth_timeout"})
        if status != "auth_success":
            raise RetryLater(f"the server refused the API key ({status}: {message})", REJECTED_CREDENTIALS_RETRY_S)
        channels = [channel for channel in self.channels.split(",") if channel]
        self._on_server = set(self.quotes.current)
        channels += [f"Q.{contract}" for contract in self.quotes.current]
        await self._send(ws, "subscribe", channels)

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        try:
            decoded = loads_exact(frame.text)  # numbers exact: a long one is read as Decimal, not float
        except InvalidJson:
            return frame  # the normalizer dead-letters it with the reason
        if isinstance(decoded, list):
            self._look_at(decoded, frame.text)
            self.live.observe(decoded)
        elif isinstance(decoded, dict):  # a lone event, looked at like a frame of one
            self._look_at([decoded], "status" if decoded.get("ev") == "status" else "")
            self.live.observe([decoded])
        return attrs.evolve(frame, decoded=decoded)

    def _look_at(self, decoded: list[Any], text: str) -> None:
        # comprehensions, not a loop with branches: this runs for every event of the firehose; status
        # events are rare, so the frame's text is searched (in C) before its events are
        if "status" in text:
            for status in [event for event in decoded if type(event) is dict and event.get("ev") == "status"]:
                self._log_status(status)
        traded = [
            sym for event in decoded
            if type(event) is dict and event.get("ev") == "T" and type(sym := event.get("sym")) is str
        ]  # fmt: skip
        if traded:
            added, dropped = self.quotes.on_trades(traded)
            if added or dropped:
                self._changed.set()  # sent by ``background``: never block receiving on a send

    async def background(self, ws: WebSocketConnection) -> None:
        """Bring the server's quote subscriptions to the wanted set, dropping before adding.

        Sending from the receive path could deadlock against a server that stops reading while its
        own sends are blocked on us; here receiving goes on whatever the sends do. Changes that pile
        up while a send is under way are merged into the next one, always within the limit.
        """
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            wanted = set(self.quotes.current)
            dropped, added = self._on_server - wanted, wanted - self._on_server
            await self._send(ws, "unsubscribe", [f"Q.{contract}" for contract in sorted(dropped)])
            self._on_server -= dropped
            await self._send(ws, "subscribe", [f"Q.{contract}" for contract in sorted(added)])
            self._on_server |= added

    async def _send(self, ws: WebSocketConnection, action: str, channels: Sequence[str]) -> None:
        if channels:
            await ws.send_message(orjson.dumps({"action": action, "params": ",".join(channels)}).decode())
            self.quote_messages_sent += 1

    async def _wait_for_status(self, receive: Receive, wanted: set[str]) -> tuple[str, str]:
        while True:
            frame = await receive()
            decoded = _decoded(frame.text)
            if decoded is None:
                raise ProtocolError(f"expected a status frame during the handshake, got {frame.text[:200]!r}")
            for event in _events(decoded):
                if event.get("ev") == "status":
                    self._log_status(event)
                    if isinstance(status := event.get("status"), str) and status in wanted:
                        return str(event["status"]), str(event.get("message", ""))

    def _log_status(self, event: dict[str, Any]) -> None:
        status, message = event.get("status"), event.get("message")
        if status == "max_connections":
            self.evicted = str(message)
        if isinstance(status, str) and status in ERROR_STATUSES:  # any JSON may arrive: a list is unhashable
            log.warning("server status", status=status, message=message)
        else:
            log.info("server status", status=status, message=message)


@attrs.define
class PolygonFeed:
    url: str
    api_key: str
    clock: Clock
    channels: str = "T.*"
    quote_limit: int = 1000
    quote_contracts: frozenset[str] = frozenset()
    max_silence_s: float | None = 90.0
    name: str = NAME
    finite: bool = False
    backfill: Any = None
    """The backfill service of this feed's gaps (``bridge.app.backfill``), when one is wired."""
    protocol: PolygonProtocol = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        pinned = frozenset(c if c.startswith("O:") else f"O:{c}" for c in self.quote_contracts)
        self.protocol = PolygonProtocol(
            self.api_key, self.channels, QuoteSubscriptions(self.quote_limit, pinned), clock=self.clock
        )

    async def run(self, sink: FrameSink) -> None:
        session = WebSocketSession(
            feed=self.name, url=self.url, clock=self.clock, protocol=self.protocol, max_silence_s=self.max_silence_s
        )
        try:
            await session.run(sink)
        except StreamClosed:
            if self.protocol.evicted is None:
                raise
            # the vendor keeps the newest connection of a key: reconnecting at once would evict the other one
            raise RetryLater(
                f"another connection with this key took over (max_connections: {self.protocol.evicted})",
                TOO_MANY_CONNECTIONS_RETRY_S,
            ) from None
