"""A small HTTP/1.1 server for health, readiness and metrics, run as a task of the bridge's trio tree.

h11 parses the protocol; each route is an async function returning a ``Response``. The server shares a
nursery with the pipeline, so it is written to never raise into it: a route that raises answers 500 (and
logs its traceback), a malformed request answers 400, a client that vanishes or stalls costs only its own
connection, which has a deadline. Only binding the port can fail, before ``task_status.started``, with a
named exception (``HttpPortInUse``, ``HttpBindError``) the CLI can report in one line.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import attrs
import h11
import trio

from bridge.logs import get_logger

log = get_logger(__name__, component="http")
CONNECTION_DEADLINE_S: Final = 10.0
"""A connection's whole life (request read, route, response sent): a slow client cannot hold one longer."""
MAX_CONNECTIONS: Final = 64
"""Connections served at once; beyond that a new one is closed at once (scrapers and probes need few)."""
MAX_REQUEST_HEAD_BYTES: Final = 16 * 1024
MAX_REQUEST_BODY_BYTES: Final = 1024 * 1024
DRAIN_S: Final = 1.0
ACCEPT_BACKOFF_S: Final = (0.05, 5.0)


class HttpBindError(Exception):
    """The HTTP server could not listen on its address (raised before it reports started)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port} for HTTP: {reason}")
        self.host, self.port, self.reason = host, port, reason


class HttpPortInUse(HttpBindError):
    """Another process already listens on the port (``BRIDGE_HTTP_PORT``)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, "the port is already in use")


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes = b""


Route = Callable[[Request], Awaitable[Response]]


async def _respond(stream: trio.abc.Stream, connection: h11.Connection, response: Response, *, head: bool) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
    ]
    await stream.send_all(connection.send(h11.Response(status_code=response.status, headers=headers)))
    if not head:
        await stream.send_all(connection.send(h11.Data(data=response.body)))
    await stream.send_all(connection.send(h11.EndOfMessage()))


async def _route(routes: Mapping[str, Route], event: h11.Request, body: bytes) -> Response:
    """The route's answer; whatever it raises becomes a 500 and one error line, never the caller's problem."""
    path = event.target.decode("latin-1").split("?", 1)[0]
    if event.method not in (b"GET", b"HEAD", b"POST"):
        return Response(405, b"method not allowed\n")
    route = routes.get(path)
    if route is None:
        return Response(404, b"not found\n")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
    try:
        return await route(Request(event.method.decode("latin-1"), path, headers, body))
    except Exception:
        log.error("http route failed", path=path, exc_info=True)
        return Response(500, b"internal error\n")


async def _next_event(stream: trio.abc.Stream, connection: h11.Connection) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(bytes(await stream.receive_some(16 * 1024)))  # b"" tells h11 the peer closed


async def _read_request(stream: trio.abc.Stream, connection: h11.Connection) -> tuple[h11.Request, bytes] | None:
    """The request and its body, or None when the client closed before asking anything."""
    request = await _next_event(stream, connection)
    if not isinstance(request, h11.Request):
        return None  # ConnectionClosed
    body = bytearray()
    while isinstance(event := await _next_event(stream, connection), h11.Data):
        body += event.data
        if len(body) > MAX_REQUEST_BODY_BYTES:
            raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
    return request, bytes(body)


async def _serve_connection(routes: Mapping[str, Route], stream: trio.abc.Stream, deadline_s: float) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
    with trio.move_on_after(deadline_s) as scope:
        try:
            received = await _read_request(stream, connection)
            if received is not None:
                request, body = received
                response = await _route(routes, request, body)
                await _respond(stream, connection, response, head=request.method == b"HEAD")
        except h11.RemoteProtocolError as exc:
            log.debug("http request malformed", error=str(exc))
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await _respond(stream, connection, Response(status, f"bad request: {exc}\n".encode()), head=False)
        await _close_gracefully(stream)
    if scope.cancelled_caught:
        log.debug("http connection timed out", deadline_s=deadline_s)


async def _close_gracefully(stream: trio.abc.Stream) -> None:
    """Half-close, then discard what the client still sends until it closes (or a second passes).

    Closing a socket with unread input makes the kernel send a reset, which can destroy the response
    before the client reads it (a 400 or 431 for a request the server stopped reading).
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    with trio.move_on_after(DRAIN_S):
        while await stream.receive_some(16 * 1024):
            pass


async def _handle(
    routes: Mapping[str, Route], limiter: trio.CapacityLimiter, deadline_s: float, stream: trio.SocketStream
) -> None:
    """One connection; nothing it does (or its client does) raises out of here."""
    try:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            log.warning("http connection refused: too many open", limit=limiter.total_tokens)
            return
        try:
            await _serve_connection(routes, stream, deadline_s)
        finally:
            limiter.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError, OSError) as exc:
        log.debug("http connection dropped", error=f"{type(exc).__name__}: {exc}")
    except Exception:
        log.error("http connection failed", exc_info=True)
    finally:
        try:
            await stream.aclose()
        except Exception as exc:  # a reset socket may complain while closing; it is closed all the same
            log.debug("http connection close failed", error=f"{type(exc).__name__}: {exc}")


async def _accept_forever(listener: trio.SocketListener, handler: Callable[[trio.SocketStream], Awaitable[None]],
                          nursery: trio.Nursery) -> None:  # fmt: skip
    """Accept until cancelled: a failing accept (out of file descriptors…) is logged and retried, never raised."""
    delay = ACCEPT_BACKOFF_S[0]
    while True:
        try:
            stream = await listener.accept()
        except trio.ClosedResourceError:
            log.error("http listener closed; the server no longer accepts connections")
            return
        except OSError as exc:
            log.warning("http accept failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            await trio.sleep(delay)
            delay = min(delay * 2, ACCEPT_BACKOFF_S[1])
            continue
        delay = ACCEPT_BACKOFF_S[0]
        nursery.start_soon(handler, stream)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port``; a failure is an ``HttpBindError`` naming the address (``HttpPortInUse`` if taken)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise HttpPortInUse(host, port) from exc
        raise HttpBindError(host, port, exc.strerror or str(exc)) from exc


async def serve_http(
    routes: Mapping[str, Route],
    *,
    port: int,
    host: str = "0.0.0.0",
    connection_deadline_s: float = CONNECTION_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` until cancelled; ``task_status.started`` receives the bound port.

    Raises only before ``started``: ``HttpPortInUse`` or ``HttpBindError`` when the address cannot be bound.
    """
    listeners = await open_listeners(host, port)
    handler = functools.partial(_handle, routes, trio.CapacityLimiter(max_connections), connection_deadline_s)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_forever, listener, handler, nursery)
            bound = listeners[0].socket.getsockname()[1]
            log.info("http server listening", host=host, port=bound)
            task_status.started(bound)
        await trio.sleep_forever()  # every listener is gone (logged): /healthz stops answering, nothing raises
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
