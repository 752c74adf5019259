"""What every simulated vendor server shares: a WebSocket server on loopback and a log of what it sent.

Each protocol module supplies a connection handler; this module binds it to 127.0.0.1 (port 0
picks a free port), reports the URL through ``task_status`` and checks bearer tokens.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from trio_websocket import WebSocketRequest, serve_websocket


@attrs.define
class SentLog:
    """What a simulator handed to its sockets, so a test can reconcile sent against stored."""

    keep_messages: bool = False
    frames_sent: int = 0
    messages_sent: int = 0
    messages_by_table: Counter[str] = attrs.Factory(Counter)
    bad_frames_sent: int = 0
    bad_frames_by_kind: Counter[str] = attrs.Factory(Counter)
    messages: list[dict[str, Any]] = attrs.Factory(list)
    connections: int = 0
    #: Protocol-level counts a simulator wants to report (quotes sent, subscriptions held, …).
    extra: Counter[str] = attrs.Factory(Counter)

    def record_good(self, batch: list[dict[str, Any]], rows_by_table: Mapping[str, int] | None = None) -> None:
        """A frame of good messages; ``rows_by_table`` says which rows they should become (default: ``type``)."""
        counts = Counter(message["type"] for message in batch) if rows_by_table is None else rows_by_table
        self.frames_sent += 1
        self.messages_sent += sum(counts.values())
        self.messages_by_table.update(counts)
        if self.keep_messages:
            self.messages.extend(batch)

    def record_bad(self, kind: str) -> None:
        self.frames_sent += 1
        self.bad_frames_sent += 1
        self.bad_frames_by_kind[kind] += 1


def bearer_token(request: WebSocketRequest) -> str | None:
    """The client's token: ``Authorization: Bearer …`` or a ``token`` query parameter."""
    for name, value in request.headers:
        if name.lower() == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode(errors="replace").strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


Handler = Callable[[WebSocketRequest], Awaitable[None]]


async def serve_loopback(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    path: str = "/stream",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` until cancelled; ``task_status.started`` receives ``ws://host:port{path}``."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_websocket,
                handler,
                host,
                port,
                None,
                handler_nursery=nursery,
                max_message_size=64 * 2**20,
            )
        )
        task_status.started(f"ws://{host}:{server.port}{path}")
