"""The WebSocket session every vendor feed shares: connect, say hello, receive, notice a dead stream.

Vendor modules supply only what differs: the URL and headers, a ``SessionProtocol`` (what to say
once connected, what to do on each frame) and how long silence may last. Every inbound text
message is emitted as a frame, status and heartbeat messages included, so a recording holds the
whole session.

No server behaviour can hang a session: the TCP connect, the TLS handshake, the WebSocket
handshake and the hello (authentication and subscription) each have a deadline the bridge
enforces itself (``StepTimedOut``); after the hello, silence is bounded by ``max_silence_s`` or by
pings. A connection that cannot be made fails with ``ConnectFailed``, naming the URL (secrets
masked) and the underlying cause. A text message that is not valid UTF-8 is a dead letter, not a
reason to close the connection; one too large for the transport closes it (the transport cannot
skip it), and still becomes a dead letter.
"""

from __future__ import annotations

import codecs
import os
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final, Protocol
from urllib.parse import urlsplit

import attrs
import trio
import trio_util
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.frame_protocol import Frame, MessageDecoder, Opcode

from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.domain.redaction import redact_url
from bridge.logs import get_logger

log = get_logger(__name__)

MESSAGE_QUEUE: Final = 4
REJECTED_CREDENTIALS_RETRY_S: Final = 300.0
TOO_MANY_CONNECTIONS_RETRY_S: Final = 60.0
OVERSIZED_PREFIX_BYTES: Final = 64 * 1024
"""How much of a message too large for the transport is kept for its dead letter."""
MESSAGE_TOO_BIG: Final = 1009
OVERSIZED_CLOSES: Final[Counter[str]] = Counter()
"""feed → connections closed because a message exceeded the transport's limit (the default counter
of every session; pass ``oversized_closes`` to count elsewhere)."""

Receive = Callable[[], Awaitable[ReceivedFrame]]
"""Reads the next frame during the hello (the frame is emitted too, so recordings keep it)."""
Heartbeat = Callable[[WebSocketConnection], Awaitable[None]]


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


class StepTimedOut(Exception):
    """A step of setting up the connection took longer than the bridge allows it."""

    def __init__(self, step: str, url: str, seconds: float) -> None:
        super().__init__(f"{step} with {redact_url(url)} took longer than {seconds:g} s")
        self.step, self.url, self.seconds = step, redact_url(url), seconds


class ConnectFailed(Exception):
    """The connection could not be made; the message names the URL (secrets masked) and the cause."""

    def __init__(self, url: str, cause: str) -> None:
        # a space before the colon: a URL may end in a masked secret, and "***:" would read as part of it
        super().__init__(f"cannot connect to {redact_url(url)} : {cause}")
        self.url, self.cause = redact_url(url), cause


def describe_cause(exc: BaseException) -> str:
    """The underlying cause of a connection failure, found through causes, contexts and groups.

    ``trio.open_tcp_stream`` reports "all attempts failed" with the real errors (one per address)
    in a group below it; this finds them: TLS errors first, then resolver errors, then the other
    OS errors, each once.
    """
    found: list[BaseException] = []
    pending, seen = [exc], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    for kind in (ssl.SSLError, ssl.CertificateError, socket.gaierror):
        for error in found:
            if isinstance(error, kind):
                return str(error)
    errnos = [error.errno for error in found if isinstance(error, OSError) and error.errno]
    if errnos:
        return "; ".join(dict.fromkeys(f"[Errno {errno}] {os.strerror(errno)}" for errno in errnos))
    for error in found:
        if isinstance(error, OSError) or str(error):
            return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return type(exc).__name__


class _LenientMessageDecoder(MessageDecoder):
    """wsproto's message decoder, except that a text message that is not UTF-8 does not fail.

    wsproto checks the UTF-8 of text messages as they arrive and, on an invalid byte, closes the
    connection with 1007 (and trio-websocket offers no way around it). Here text frames go through
    wsproto's own checks as binary ones (fragmentation, continuation order), and are then decoded
    with ``surrogateescape``: an invalid byte becomes a lone surrogate, which valid UTF-8 can never
    produce, so the session can tell such a message from a good one and dead-letter it with the
    bytes escaped. It also notes the size and first bytes of the message in progress, for the dead
    letter of a message the transport refuses as too large.
    """

    def __init__(self) -> None:
        super().__init__()
        self._text: codecs.IncrementalDecoder | None = None
        self._is_text = False
        self.message_bytes = 0
        self._prefix: list[bytes | bytearray] = []
        """The message's first payloads, by reference (copying each message would cost the firehose)."""

    @property
    def message_prefix(self) -> bytes:
        """The first ``OVERSIZED_PREFIX_BYTES`` of the message in progress (or the last one)."""
        return b"".join(self._prefix)[:OVERSIZED_PREFIX_BYTES]

    def process_frame(self, frame: Frame) -> Frame:
        if frame.opcode is not Opcode.CONTINUATION:
            self.message_bytes, self._prefix, self._text = 0, [], None
            self._is_text = frame.opcode is Opcode.TEXT
            if self._is_text:
                frame = Frame(Opcode.BINARY, frame.payload, frame.frame_finished, frame.message_finished)
        result = super().process_frame(frame)
        payload = result.payload
        assert isinstance(payload, bytes | bytearray)
        if self.message_bytes < OVERSIZED_PREFIX_BYTES:
            self._prefix.append(payload)
        self.message_bytes += len(payload)
        if not self._is_text:
            return result
        if self._text is None and result.message_finished:  # the whole message in one frame: no state to keep
            text = payload.decode("utf-8", errors="surrogateescape")
        else:
            if self._text is None:
                self._text = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
            text = self._text.decode(payload, result.message_finished)
        return Frame(Opcode.TEXT, text, result.frame_finished, result.message_finished)


class _LenientWSConnection(WSConnection):
    """A client ``WSConnection`` whose frame protocol uses ``_LenientMessageDecoder``.

    wsproto creates the frame protocol when the handshake's response arrives (inside
    ``receive_data``) and decodes frames only when ``events()`` is iterated, so replacing the decoder
    right after ``receive_data`` created it covers every frame, even one that came in the same read
    as the handshake's response. The replacement relies on wsproto's private ``Connection._proto``
    and ``FrameProtocol._message_decoder``; if a wsproto release renames them, the session logs a
    warning and works as before (invalid UTF-8 then closes the connection with 1007).
    """

    def __init__(self) -> None:
        super().__init__(ConnectionType.CLIENT)
        self.decoder: _LenientMessageDecoder | None = None

    def receive_data(self, data: bytes | None) -> None:
        had_connection = self.connection is not None
        super().receive_data(data)
        if not had_connection and self.connection is not None:
            proto = getattr(self.connection, "_proto", None)
            if isinstance(getattr(proto, "_message_decoder", None), MessageDecoder):
                self.decoder = _LenientMessageDecoder()
                proto._message_decoder = self.decoder  # type: ignore[union-attr]
            else:  # pragma: no cover - only with a wsproto whose internals moved
                log.warning("wsproto internals changed: invalid UTF-8 text will close the connection")


def frame_of(feed: str, received_at: datetime, message: str | bytes) -> ReceivedFrame:
    """The frame of one received message; one that is not UTF-8 carries the problem, its bytes escaped.

    A text message holds lone surrogates exactly where its bytes were not UTF-8 (see
    ``_LenientMessageDecoder``); a binary one is decoded here. Either way an undecodable byte
    becomes a ``\\xNN`` escape, so the dead letter stays readable text.
    """
    if isinstance(message, str):
        if message.isascii():
            return ReceivedFrame(feed, received_at, message)
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            return _not_utf8(feed, received_at, message.encode("utf-8", errors="surrogateescape"), "text")
        return ReceivedFrame(feed, received_at, message)
    try:
        return ReceivedFrame(feed, received_at, message.decode("utf-8"))
    except UnicodeDecodeError:
        return _not_utf8(feed, received_at, message, "binary")


def _not_utf8(feed: str, received_at: datetime, raw: bytes, kind: str) -> ReceivedFrame:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"{kind} frame is not UTF-8: {exc}"
    else:  # pragma: no cover - only called for bytes that failed to decode
        reason = f"{kind} frame is not UTF-8"
    text = raw.decode("utf-8", errors="backslashreplace")
    return ReceivedFrame(feed, received_at, text, problem=("invalid_utf8", reason))


@attrs.frozen
class Deadlines:
    """Seconds each step of setting up a connection may take before the bridge gives up on it."""

    tcp_connect_s: float = 10.0
    """Name resolution and TCP connect (every address of the host)."""
    tls_s: float = 10.0
    websocket_handshake_s: float = 10.0
    hello_s: float = 30.0
    """The protocol's hello: authentication, subscription, and what else it does before data flows."""
    close_s: float = 5.0


@asynccontextmanager
async def open_websocket_client(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    deadlines: Deadlines = Deadlines(),
    max_message_bytes: int = 64 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[WebSocketConnection, _LenientWSConnection]]:
    """A client WebSocket connection, each step under its own deadline; closed on exit.

    Built from trio-websocket's parts rather than ``open_websocket_url``, whose connect timeout
    does not fire while its reader task waits on a server that accepted TCP and says nothing.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectFailed(url, "not a ws:// or wss:// URL with a host")
    host, tls = parts.hostname, parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == (443 if tls else 80) else f"{shown_host}:{port}"
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(deadlines.tcp_connect_s):
                tcp = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise StepTimedOut("TCP connect", url, deadlines.tcp_connect_s) from None
        except OSError as exc:
            raise ConnectFailed(url, describe_cause(exc)) from exc
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
        opened = False
        try:
            if tls:
                stream = trio.SSLStream(
                    tcp, ssl_context or ssl.create_default_context(), server_hostname=host, https_compatible=True
                )
                try:
                    with trio.fail_after(deadlines.tls_s):
                        await stream.do_handshake()
                except trio.TooSlowError:
                    raise StepTimedOut("TLS handshake", url, deadlines.tls_s) from None
                except (OSError, trio.BrokenResourceError) as exc:
                    raise ConnectFailed(url, describe_cause(exc)) from exc
            protocol = _LenientWSConnection()
            ws = WebSocketConnection(
                stream,
                protocol,
                host=host_header,
                path=resource,
                client_extra_headers=[(key.encode(), value.encode()) for key, value in headers],
                # messages read off the socket and not yet journaled: few, so the bytes they hold stay small
                # (MESSAGE_QUEUE times the message limit at worst; a full queue stops reading the socket)
                message_queue_size=MESSAGE_QUEUE,
                max_message_size=max_message_bytes,
                receive_buffer_size=64 * 1024,
            )
            # what trio-websocket's own ``wrap_client_stream`` does, with a reader that can be waited on
            reader_done = trio.Event()

            async def read() -> None:
                try:
                    await ws._reader_task()
                finally:
                    reader_done.set()

            nursery.start_soon(read)
            with trio.move_on_after(deadlines.websocket_handshake_s):
                await trio_util.wait_any(ws._open_handshake.wait, reader_done.wait)
            if not ws._open_handshake.is_set():
                if reader_done.is_set():
                    raise ConnectFailed(url, "the server closed the connection during the WebSocket handshake")
                raise StepTimedOut("WebSocket handshake", url, deadlines.websocket_handshake_s)
            opened = True
        finally:
            if not opened:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        try:
            yield ws, protocol
        finally:
            with trio.move_on_after(deadlines.close_s):
                await ws.aclose()
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


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
    deadlines: Deadlines = Deadlines()
    oversized_closes: Counter[str] = OVERSIZED_CLOSES
    """Counts, per feed, connections closed because a message exceeded ``max_message_bytes``."""

    async def run(self, sink: FrameSink) -> None:
        """Receive until the connection fails; raises so the supervisor can reconnect."""
        try:
            try:
                await self._connect_and_receive(sink)
            except BaseExceptionGroup as group:  # the keep-alive task's nursery wraps what it raises
                inner = _single(group)
                if isinstance(inner, Exception):
                    raise inner from None
                raise
        except ConnectionRejected as exc:
            url = redact_url(self.url)
            if exc.status_code in (401, 403):
                raise RetryLater(
                    f"the server refused the credentials (HTTP {exc.status_code}) at {url}; check the feed's token",
                    REJECTED_CREDENTIALS_RETRY_S,
                ) from None
            if exc.status_code == 429:
                raise RetryLater(
                    "the server refused a second connection for this key (HTTP 429); is another bridge running?",
                    TOO_MANY_CONNECTIONS_RETRY_S,
                ) from None
            raise ConnectFailed(
                self.url, f"the server answered the WebSocket handshake with HTTP {exc.status_code}"
            ) from None
        except ConnectionClosed as exc:
            reason = exc.reason
            detail = f"code {reason.code} {reason.name}: {reason.reason or 'no reason'}" if reason else "no reason"
            raise StreamClosed(f"connection closed by the server ({detail})") from None

    async def _connect_and_receive(self, sink: FrameSink) -> None:
        async with open_websocket_client(
            self.url, headers=self.headers, deadlines=self.deadlines, max_message_bytes=self.max_message_bytes
        ) as (ws, protocol):
            if self.protocol is not None:

                async def receive() -> ReceivedFrame:
                    frame = await self._next_frame(ws, protocol, sink)
                    await sink.emit(frame)
                    return frame

                with trio.move_on_after(self.deadlines.hello_s) as hello:
                    await self.protocol.hello(ws, receive, sink)
                if hello.cancelled_caught:
                    raise StepTimedOut("authentication and subscription", self.url, self.deadlines.hello_s)
            sink.connected(self.feed)
            log.info("feed connected", feed=self.feed)
            background = getattr(self.protocol, "background", None)
            if self.ping_interval_s is None and self.heartbeat is None and background is None:
                await self._receive(ws, protocol, sink)
                return
            async with trio.open_nursery() as nursery:
                if background is not None:
                    nursery.start_soon(background, ws)
                if self.ping_interval_s is not None:
                    nursery.start_soon(self._keep_alive, ws, self.ping_interval_s)
                if self.heartbeat is not None:
                    nursery.start_soon(self._heartbeats, ws, self.heartbeat, self.heartbeat_interval_s)
                await self._receive(ws, protocol, sink)

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

    async def _receive(self, ws: WebSocketConnection, protocol: _LenientWSConnection, sink: FrameSink) -> None:
        while True:
            frame = await self._next_frame(ws, protocol, sink)
            if self.protocol is not None:
                frame = await self.protocol.on_frame(ws, frame)
            await sink.emit(frame)

    async def _next_frame(
        self, ws: WebSocketConnection, protocol: _LenientWSConnection, sink: FrameSink
    ) -> ReceivedFrame:
        try:
            if self.max_silence_s is None:
                message = await ws.get_message()
            else:
                with trio.move_on_after(self.max_silence_s) as silence:
                    message = await ws.get_message()
                if silence.cancelled_caught:
                    raise StreamStalled(f"no message for {self.max_silence_s:g} s")
        except ConnectionClosed as exc:
            decoder, code = protocol.decoder, exc.reason.code if exc.reason else None
            if code == MESSAGE_TOO_BIG and decoder is not None and decoder.message_bytes > self.max_message_bytes:
                await self._oversized(decoder, sink)
            raise
        return frame_of(self.feed, self.clock(), message)

    async def _oversized(self, decoder: _LenientMessageDecoder, sink: FrameSink) -> None:
        """The transport closed the connection on a message over its limit: dead-letter what is known of it."""
        self.oversized_closes[self.feed] += 1
        prefix = decoder.message_prefix
        reason = (
            f"message of more than {self.max_message_bytes:,} bytes (at least {decoder.message_bytes:,} received)"
            f" exceeds the transport's limit; the connection was closed (1009); the frame holds its first"
            f" {len(prefix):,} bytes"
        )
        log.warning("oversized message closed the connection", feed=self.feed, received_bytes=decoder.message_bytes)
        text = prefix.decode("utf-8", errors="backslashreplace")
        await sink.emit(ReceivedFrame(self.feed, self.clock(), text, problem=("oversized", reason)))


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a group holds, through nested one-exception groups (``None`` if several)."""
    current: BaseException = group
    while isinstance(current, BaseExceptionGroup):
        if len(current.exceptions) != 1:
            return None
        current = current.exceptions[0]
    return current
