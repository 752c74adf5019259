"""A TCP proxy that can cut the line: the database "goes away" for fault tests and the soak script.

Listens on 127.0.0.1 and forwards to a TCP address or a unix socket. ``break_connections()`` closes every
open connection and refuses new ones until ``restore()``: to the bridge that is exactly a database outage.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import attrs
import trio


@attrs.define
class TcpProxy:
    connect: Callable[[], Awaitable[trio.abc.Stream]]
    up: bool = True
    connections: int = 0
    _scopes: set[trio.CancelScope] = attrs.Factory(set)

    @classmethod
    def to_unix_socket(cls, path: str) -> TcpProxy:
        return cls(functools.partial(trio.open_unix_socket, path))

    @classmethod
    def to_tcp(cls, host: str, port: int) -> TcpProxy:
        return cls(functools.partial(trio.open_tcp_stream, host, port))

    def break_connections(self) -> None:
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.up = True

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` receives the listening port."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
            task_status.started(listeners[0].socket.getsockname()[1])

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            try:
                upstream = await self.connect()
            except OSError:
                return
            self.connections += 1
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)

    @staticmethod
    async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, both: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()
