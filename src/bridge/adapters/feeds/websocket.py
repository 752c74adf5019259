"""The WebSocket session every vendor feed shares: connect, say hello, receive, notice a dead stream.

Vendor modules supply only what differs: the URL and headers, a ``SessionProtocol`` (what to say
once connected, what to do on each frame) and how long silence may last. Every inbound text
message is emitted as a frame, status and heartbeat messages included, so a recording holds the
whole session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.logs import get_logger

log = get_logger(__name__)

REJECTED_CREDENTIALS_RETRY_S: Final = 300.0
TOO_MANY_CONNECTIONS_RETRY_S: Final = 60.0
Receive = Callable[[], Awaitable[ReceivedFrame]]
Heartbeat = Callable[[WebSocketConnection], Awaitable[None]]
"""Reads the next frame during the hello (the frame is emitted too, so recordings keep it)."""


class SessionProtocol(Protocol):
    """The vendor-specific part of a session."""

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        """Authenticate and subscribe; raise ``RetryLater`` when the vendor refuses the credentials.

        ``sink`` takes frames the protocol makes itself (REST snapshots taken after connecting)."""
        ...

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        """Look at a frame before it is emitted (log status, note wanted subscriptions); return it.

        It must not wait on the network; a protocol with messages to send while receiving may define
        ``async def background(ws)``, which the session runs beside the receive loop.
        """
        ...


class StreamStalled(Exception):
    """No message arrived within the feed's allowed silence: the connection is presumed dead."""


class StreamClosed(Exception):
    """The server closed the connection; the supervisor reconnects."""


@attrs.frozen
class WebSocketSession:
    feed: str
    url: str
    clock: Clock
    headers: Sequence[tuple[str, str]] = ()
    protocol: SessionProtocol | None = None
    max_silence_s: float | None = 90.0
    ping_interval_s: float | None = None
    heartbeat: Heartbeat | None = None
    heartbeat_interval_s: float = 20.0
    max_message_bytes: int = 64 * 1024 * 1024
    """The transport's hard limit (the connection is closed beyond it); BRIDGE_MAX_FRAME_BYTES, lower,
    is where the pipeline dead-letters a frame instead of parsing it."""

    async def run(self, sink: FrameSink) -> None:
        """Receive until the connection fails; raises so the supervisor can reconnect."""
        try:
            try:
                await self._connect_and_receive(sink)
            except BaseExceptionGroup as group:  # the keep-alive task's nursery wraps what it raises
                inner = group.exceptions[0] if len(group.exceptions) == 1 else None
                if isinstance(inner, Exception):
                    raise inner from None
                raise
        except ConnectionRejected as exc:
            if exc.status_code in (401, 403):
                raise RetryLater(
                    f"the server refused the credentials (HTTP {exc.status_code}); check the feed's token",
                    REJECTED_CREDENTIALS_RETRY_S,
                ) from None
            if exc.status_code == 429:
                raise RetryLater(
                    "the server refused a second connection for this key (HTTP 429); is another bridge running?",
                    TOO_MANY_CONNECTIONS_RETRY_S,
                ) from None
            raise
        except ConnectionClosed as exc:
            reason = exc.reason
            detail = f"code {reason.code} {reason.name}: {reason.reason or 'no reason'}" if reason else "no reason"
            raise StreamClosed(f"connection closed by the server ({detail})") from None

    async def _connect_and_receive(self, sink: FrameSink) -> None:
        async with open_websocket_url(
            self.url,
            extra_headers=[(key.encode(), value.encode()) for key, value in self.headers],
            max_message_size=self.max_message_bytes,
            receive_buffer_size=64 * 1024,
            message_queue_size=64,
            connect_timeout=15,
            disconnect_timeout=5,
        ) as ws:
            if self.protocol is not None:

                async def receive() -> ReceivedFrame:
                    frame = await self._next_frame(ws)
                    await sink.emit(frame)
                    return frame

                await self.protocol.hello(ws, receive, sink)
            sink.connected(self.feed)
            log.info("feed connected", feed=self.feed)
            background = getattr(self.protocol, "background", None)
            if self.ping_interval_s is None and self.heartbeat is None and background is None:
                await self._receive(ws, sink)
                return
            async with trio.open_nursery() as nursery:
                if background is not None:
                    nursery.start_soon(background, ws)
                if self.ping_interval_s is not None:
                    nursery.start_soon(self._keep_alive, ws, self.ping_interval_s)
                if self.heartbeat is not None:
                    nursery.start_soon(self._heartbeats, ws, self.heartbeat, self.heartbeat_interval_s)
                await self._receive(ws, sink)

    @staticmethod
    async def _heartbeats(ws: WebSocketConnection, heartbeat: Heartbeat, interval_s: float) -> None:
        """Application-level heartbeats on the vendor's schedule (some drop a silent client)."""
        while True:
            await trio.sleep(interval_s)
            await heartbeat(ws)

    async def _keep_alive(self, ws: WebSocketConnection, interval_s: float) -> None:
        """Protocol-level pings (allowed by every vendor); a missing pong means the link is dead."""
        while True:
            await trio.sleep(interval_s)
            with trio.move_on_after(interval_s) as waiting:
                await ws.ping()
            if waiting.cancelled_caught:
                raise StreamStalled(f"no pong within {interval_s:g} s")

    async def _receive(self, ws: WebSocketConnection, sink: FrameSink) -> None:
        while True:
            frame = await self._next_frame(ws)
            if self.protocol is not None:
                frame = await self.protocol.on_frame(ws, frame)
            await sink.emit(frame)

    async def _next_frame(self, ws: WebSocketConnection) -> ReceivedFrame:
        if self.max_silence_s is None:
            message = await ws.get_message()
        else:
            with trio.move_on_after(self.max_silence_s) as silence:
                message = await ws.get_message()
            if silence.cancelled_caught:
                raise StreamStalled(f"no message for {self.max_silence_s:g} s")
        if isinstance(message, str):
            return ReceivedFrame(self.feed, self.clock(), message)
        try:
            return ReceivedFrame(self.feed, self.clock(), message.decode("utf-8"))
        except UnicodeDecodeError as exc:
            # kept readable for the dead-letter table: undecodable bytes become \xNN escapes
            text = message.decode("utf-8", errors="backslashreplace")
            return ReceivedFrame(
                self.feed, self.clock(), text, problem=("invalid_utf8", f"binary frame is not UTF-8: {exc}")
            )
