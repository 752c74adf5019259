"""The WebSocket session every vendor feed shares: connect, say hello, receive, notice a dead stream.

Vendor modules supply only what differs: the URL and headers, what to send once connected
(authenticate, subscribe) and how long silence may last. Every inbound text message is emitted
as a frame, status and heartbeat messages included, so a recording holds the whole session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.logs import get_logger

log = get_logger(__name__)

REJECTED_CREDENTIALS_RETRY_S: Final = 300.0
Hello = Callable[[WebSocketConnection], Awaitable[None]]


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
    hello: Hello | None = None
    """Sent after the handshake, before frames are read as data (authentication, subscriptions)."""
    max_silence_s: float | None = 90.0
    max_message_bytes: int = 16 * 1024 * 1024

    async def run(self, sink: FrameSink) -> None:
        """Receive until the connection fails; raises so the supervisor can reconnect."""
        try:
            async with open_websocket_url(
                self.url,
                extra_headers=[(key.encode(), value.encode()) for key, value in self.headers],
                max_message_size=self.max_message_bytes,
                receive_buffer_size=64 * 1024,
                message_queue_size=64,
                connect_timeout=15,
                disconnect_timeout=5,
            ) as ws:
                if self.hello is not None:
                    await self.hello(ws)
                sink.connected(self.feed)
                log.info("feed connected", feed=self.feed)
                await self._receive(ws, sink)
        except ConnectionRejected as exc:
            if exc.status_code in (401, 403):
                raise RetryLater(
                    f"the server refused the credentials (HTTP {exc.status_code}); check the feed's token",
                    REJECTED_CREDENTIALS_RETRY_S,
                ) from None
            raise
        except ConnectionClosed as exc:
            reason = exc.reason
            detail = f"code {reason.code} {reason.name}: {reason.reason or 'no reason'}" if reason else "no reason"
            raise StreamClosed(f"connection closed by the server ({detail})") from None

    async def _receive(self, ws: WebSocketConnection, sink: FrameSink) -> None:
        while True:
            if self.max_silence_s is None:
                message = await ws.get_message()
            else:
                with trio.move_on_after(self.max_silence_s) as silence:
                    message = await ws.get_message()
                if silence.cancelled_caught:
                    raise StreamStalled(f"no message for {self.max_silence_s:g} s")
            text = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
            await sink.emit(ReceivedFrame(self.feed, self.clock(), text))
