"""The shared WebSocket session against hostile and broken servers on 127.0.0.1.

Servers that accept TCP and say nothing, answer the handshake but never the hello, refuse the port,
do not exist, send text that is not UTF-8, send a message too large for the transport, or drop every
connection after a moment of data: each must end an attempt within its deadline, name what went
wrong (without secrets), or be a dead letter, and be retried as the reconnect policy says.
"""

from __future__ import annotations

import functools
import itertools
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from bridge.adapters.feeds.websocket import (
    ConnectFailed,
    Deadlines,
    Receive,
    StepTimedOut,
    StreamClosed,
    WebSocketSession,
)
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import supervise_feed
from bridge.domain.models import ReceivedFrame
from bridge.domain.policies import BackoffPolicy
from bridge.domain.ports import FrameSink
from tests.unit.fakes import T0

SECRET = "s3cret-token-value"
FAST = Deadlines(tcp_connect_s=2, tls_s=2, websocket_handshake_s=0.3, hello_s=0.3, close_s=0.5)


@attrs.define
class Sink:
    frames: list[ReceivedFrame] = attrs.Factory(list)
    connects: int = 0
    arrived: trio.Event = attrs.Factory(trio.Event)
    wanted: int = 0

    def connected(self, feed: str) -> None:
        self.connects += 1

    async def emit(self, frame: ReceivedFrame) -> None:
        self.frames.append(frame)
        if len(self.frames) >= self.wanted:
            self.arrived.set()


def session(url: str, **overrides: object) -> WebSocketSession:
    settings: dict[str, object] = {"feed": "test", "url": url, "clock": lambda: T0, "deadlines": FAST}
    return WebSocketSession(**{**settings, **overrides})  # type: ignore[arg-type]


async def serve_tcp(handler: Callable[[trio.SocketStream], Awaitable[None]], nursery: trio.Nursery) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_a_server_that_accepts_tcp_and_says_nothing_fails_the_handshake_in_time_and_is_retried() -> None:
    accepted: list[float] = []

    async def silent(stream: trio.SocketStream) -> None:
        accepted.append(trio.current_time())
        await trio.sleep_forever()

    stats = PipelineStats()
    policy = BackoffPolicy(initial_s=0.1, max_s=1, multiplier=2, jitter=0)
    async with trio.open_nursery() as nursery:
        port = await serve_tcp(silent, nursery)
        url = f"ws://127.0.0.1:{port}/stream?token={SECRET}"
        with trio.fail_after(5):
            with pytest.raises(StepTimedOut) as raised:
                await session(url).run(Sink())
        assert str(raised.value) == (
            f"WebSocket handshake with ws://127.0.0.1:{port}/stream?token=*** took longer than 0.3 s"
        )
        accepted.clear()
        with trio.move_on_after(2.0):
            await supervise_feed("test", session(url).run, Sink(), policy, stats)
        nursery.cancel_scope.cancel()
    # each attempt takes its 0.3 s deadline, then waits 0.1, 0.2, 0.4 s
    gaps = [later - earlier for earlier, later in itertools.pairwise(accepted)]
    assert len(gaps) >= 3
    for gap, expected in zip(gaps, [0.4, 0.5, 0.7], strict=False):
        assert expected - 0.01 <= gap < expected + 0.15
    assert stats.feed_last_error["test"] == (
        f"StepTimedOut: WebSocket handshake with ws://127.0.0.1:{port}/stream?token=*** took longer than 0.3 s"
    )
    assert stats.feed_state["test"] in (FeedState.BACKOFF, FeedState.STARTING)
    assert "test" not in stats.feeds_ever_connected


async def test_a_server_that_accepts_tcp_and_says_nothing_fails_the_tls_handshake_in_time() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await serve_tcp(silent, nursery)
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(StepTimedOut) as raised:
            await session(f"wss://127.0.0.1:{port}/", deadlines=attrs.evolve(FAST, tls_s=0.2)).run(Sink())
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert str(raised.value) == f"TLS handshake with wss://127.0.0.1:{port}/ took longer than 0.2 s"
    assert 0.2 <= elapsed < 0.8


@attrs.define
class AuthThenWait:
    """A protocol that sends its credentials and waits for the answer."""

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        await ws.send_message('{"action": "auth"}')
        await receive()

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        return frame


async def test_a_server_that_never_answers_the_authentication_fails_the_hello_in_time() -> None:
    connections: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        connections.append(await ws.get_message())  # the auth message, never answered
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        port = server.port
        url = f"ws://127.0.0.1:{port}/?apiKey={SECRET}"
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(StepTimedOut) as raised:
            await session(url, protocol=AuthThenWait()).run(Sink())
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert str(raised.value) == (
        f"authentication and subscription with ws://127.0.0.1:{port}/?apiKey=*** took longer than 0.3 s"
    )
    assert 0.3 <= elapsed < 1.0
    assert connections == ['{"action": "auth"}']


async def test_a_refused_port_names_the_url_and_the_cause() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"ws://user:hunter22@127.0.0.1:{port}/stream?token={SECRET}&channel=news"
    with trio.fail_after(5), pytest.raises(ConnectFailed) as raised:
        await session(url).run(Sink())
    assert str(raised.value) == (
        f"cannot connect to ws://user:***@127.0.0.1:{port}/stream?token=***&channel=news : "
        "[Errno 111] Connection refused"
    )


async def test_an_unknown_host_names_the_url_and_the_resolver_error() -> None:
    url = f"wss://bridge-test.invalid/news?access_token={SECRET}"
    stats = PipelineStats()
    with trio.move_on_after(0.5):
        await supervise_feed("test", session(url).run, Sink(), BackoffPolicy(initial_s=10), stats)
    error = stats.feed_last_error["test"]
    assert error.startswith(
        "ConnectFailed: cannot connect to wss://bridge-test.invalid/news?access_token=*** : [Errno -"
    )
    assert SECRET not in error
    assert socket.gaierror.__name__ not in error  # the resolver's own words, e.g. "Name or service not known"


def text_frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One unmasked server frame, built by hand so that its bytes may be anything."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    if len(payload) < 65536:
        return bytes([first, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([first, 127]) + struct.pack("!Q", len(payload)) + payload


def raw_server(frames: list[bytes], connections: Counter[str]) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A WebSocket server that completes the handshake (wsproto) then writes ``frames`` as raw bytes."""

    async def handler(stream: trio.SocketStream) -> None:
        connections["opened"] += 1
        protocol = WSConnection(ConnectionType.SERVER)
        while True:
            protocol.receive_data(await stream.receive_some(65536))
            requests = [event for event in protocol.events() if isinstance(event, Request)]
            if requests:
                break
        await stream.send_all(protocol.send(AcceptConnection()))
        for frame in frames:
            await stream.send_all(frame)
            await trio.sleep(0.01)
        await trio.sleep_forever()

    return handler


async def test_text_that_is_not_utf8_is_a_dead_letter_and_the_connection_stays_open() -> None:
    connections: Counter[str] = Counter()
    frames = [
        text_frame(b'{"n": 1}'),
        text_frame(b'{"n": 2, "bad": "\xff\xfe"}'),
        # a good one in two fragments, a two-byte character split between them
        text_frame(b'{"n": 3, "name": "caf' + b"\xc3", fin=False),
        text_frame(b'\xa9"}', opcode=0x0),
        text_frame(b'{"n": 4}'),
    ]
    sink = Sink(wanted=4)
    async with trio.open_nursery() as nursery:
        port = await serve_tcp(raw_server(frames, connections), nursery)
        nursery.start_soon(session(f"ws://127.0.0.1:{port}/").run, sink)
        with trio.fail_after(5):
            await sink.arrived.wait()
        await trio.sleep(0.1)  # the connection is still up: nothing more arrives, nothing fails
        nursery.cancel_scope.cancel()
    assert [frame.text for frame in sink.frames] == [
        '{"n": 1}',
        '{"n": 2, "bad": "\\xff\\xfe"}',
        '{"n": 3, "name": "café"}',
        '{"n": 4}',
    ]
    assert [frame.problem for frame in sink.frames] == [
        None,
        (
            "invalid_utf8",
            "text frame is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 17: invalid start byte",
        ),
        None,
        None,
    ]
    assert connections["opened"] == 1 and sink.connects == 1


async def test_a_message_too_large_for_the_transport_closes_the_connection_and_is_a_dead_letter() -> None:
    connections: Counter[str] = Counter()
    big = b'{"n": 2, "pad": "' + b"x" * 3000 + b'"}'
    sink = Sink()
    closes: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        port = await serve_tcp(raw_server([text_frame(b'{"n": 1}'), text_frame(big)], connections), nursery)
        with trio.fail_after(5), pytest.raises(StreamClosed) as raised:
            await session(f"ws://127.0.0.1:{port}/", max_message_bytes=1000, oversized_closes=closes).run(sink)
        nursery.cancel_scope.cancel()
    assert "code 1009" in str(raised.value)
    assert [frame.problem for frame in sink.frames] == [
        None,
        (
            "oversized",
            "message of more than 1,000 bytes (at least 3,019 received) exceeds the transport's limit; the connection"
            " was closed (1009); the frame holds its first 3,019 bytes",
        ),
    ]
    assert sink.frames[1].text == big.decode()
    assert closes == {"test": 1}


async def test_a_server_that_drops_every_connection_after_a_moment_of_data_is_reconnected_at_once() -> None:
    """The case that once pushed the reconnect delay to 28 s: now every reconnect is immediate."""
    opened: list[float] = []
    closed: list[float] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        opened.append(trio.current_time())
        for n in range(6):
            await ws.send_message(f'{{"n": {n}}}')
            await trio.sleep(0.05)
        closed.append(trio.current_time())
        await ws.aclose()

    stats = PipelineStats()
    sink = Sink()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        url = f"ws://127.0.0.1:{server.port}/"
        with trio.move_on_after(3.5):
            await supervise_feed("test", session(url).run, sink, BackoffPolicy(), stats)
        nursery.cancel_scope.cancel()
    waits = [start - end for end, start in zip(closed, opened[1:], strict=False)]
    assert len(waits) >= 6
    assert max(waits) < 0.25 + 0.1  # the jitter, and the time a loopback reconnect takes
    assert sink.connects == len(opened)
    assert len(sink.frames) >= 6 * len(closed)
