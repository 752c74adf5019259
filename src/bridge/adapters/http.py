"""A small HTTP/1.1 server for health, readiness and metrics, run as a task of the bridge's trio tree.

h11 parses the protocol; each route is an async function returning (status, content type, body).
One request per connection, with a deadline, so a slow scraper cannot hold a task for long.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import attrs
import h11
import trio

from bridge.logs import get_logger

log = get_logger(__name__, component="http")
REQUEST_DEADLINE_S: Final = 10.0


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


Route = Callable[[Request], Awaitable[Response]]


async def _handle(routes: Mapping[str, Route], stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    with trio.move_on_after(REQUEST_DEADLINE_S):
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(16 * 1024)
                    if not data:
                        return
                    connection.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    path = event.target.decode("latin-1").split("?", 1)[0]
                    route = routes.get(path)
                    if event.method not in (b"GET", b"HEAD", b"POST"):
                        response = Response(405, b"method not allowed\n")
                    elif route is None:
                        response = Response(404, b"not found\n")
                    else:
                        headers_in = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
                        response = await route(Request(event.method.decode(), path, headers_in))
                    headers = [
                        ("content-type", response.content_type),
                        ("content-length", str(len(response.body))),
                        ("connection", "close"),
                    ]
                    await stream.send_all(connection.send(h11.Response(status_code=response.status, headers=headers)))
                    if event.method != b"HEAD":
                        await stream.send_all(connection.send(h11.Data(data=response.body)))
                    await stream.send_all(connection.send(h11.EndOfMessage()))
                    return
                return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("http request dropped", error=str(exc))
        finally:
            await stream.aclose()


async def serve_http(
    routes: Mapping[str, Route],
    *,
    port: int,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` until cancelled; ``task_status.started`` receives the bound port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, functools.partial(_handle, routes), port,
                                                          host=host))  # fmt: skip
        bound = listeners[0].socket.getsockname()[1]
        log.info("http server listening", host=host, port=bound)
        task_status.started(bound)
