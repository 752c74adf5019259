"""What every simulated vendor server shares: a WebSocket server on loopback and a log of what it sent.

Each protocol module supplies a connection handler; this module binds it to 127.0.0.1 (port 0
picks a free port), reports the URL through ``task_status`` and checks bearer tokens. Two helpers
serve streaming simulators: ``Pacer`` (one message rate for the whole server, one sleep per frame)
and ``SharedMessages`` (one message sequence across connections, so a reconnect resumes it exactly).
"""

from __future__ import annotations

import errno
import functools
import hmac
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from trio_websocket import WebSocketRequest, serve_websocket

__all__ = ["Pacer", "SentLog", "SharedMessages", "bearer_token", "serve_loopback", "streamer_port", "token_matches"]

T = TypeVar("T")


@attrs.define
class SentLog:
    """What a simulator handed to its sockets, so a test can reconcile sent against stored.

    A frame counts once ``send_message`` returned: it reached the socket, which is all a server can know.
    """

    keep_messages: bool = False
    """Also keep the good messages and the bad frames themselves (memory grows with the run)."""
    frames_sent: int = 0
    messages_sent: int = 0
    messages_by_table: Counter[str] = attrs.Factory(Counter)
    bad_frames_sent: int = 0
    bad_frames_by_kind: Counter[str] = attrs.Factory(Counter)
    messages: list[dict[str, Any]] = attrs.Factory(list)
    bad_frames: list[tuple[str, str]] = attrs.Factory(list)
    """``(kind, text)`` of every malformed frame, when ``keep_messages``."""
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

    def record_bad(self, kind: str, text: str | None = None) -> None:
        """A malformed frame of ``kind`` (the bridge should dead-letter it); ``text`` is kept if asked."""
        self.frames_sent += 1
        self.bad_frames_sent += 1
        self.bad_frames_by_kind[kind] += 1
        if self.keep_messages and text is not None:
            self.bad_frames.append((kind, text))


def bearer_token(request: WebSocketRequest) -> str | None:
    """The client's token: ``Authorization: Bearer …`` or a ``token`` query parameter."""
    for name, value in request.headers:
        if name.lower() == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode(errors="replace").strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def token_matches(request: WebSocketRequest, token: str) -> bool:
    """Whether the request carries ``token`` (compared in constant time, as a real server would)."""
    given = bearer_token(request)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@attrs.define
class Pacer:
    """Holds a server to ``per_second`` messages a second over all its connections, one sleep per frame.

    Sleeping per frame rather than per message is what lets a simulator reach tens of thousands of
    messages a second; up to ``catch_up_s`` of lag (sleep overshoot, a slow client) is made up at once,
    so the average rate holds without long bursts after an idle spell. ``None`` means as fast as possible.
    """

    per_second: float | None
    catch_up_s: float = 0.25
    _due: float | None = attrs.field(default=None, init=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        if self.per_second is not None and not self.per_second > 0:
            raise ValueError(f"per_second must be positive or None, got {self.per_second!r}")

    async def wait(self, count: int) -> None:
        """Return when ``count`` more messages may be sent."""
        if self.per_second is None:
            await trio.lowlevel.checkpoint()
            return
        async with self._lock:  # one schedule for every connection: the rate is the server's
            now = trio.current_time()
            due = now if self._due is None else max(self._due, now - self.catch_up_s)
            self._due = due + count / self.per_second
            await trio.sleep_until(self._due)


class SharedMessages(Generic[T]):
    """One message sequence handed out to every connection, at most ``total`` messages in all.

    A connection ``take``s a frame's worth just before sending and ``give_back``s what it could not send,
    which goes to the front: the next connection continues with exactly the next message (no gap, no
    repeat), as a real upstream with resume does. Synchronous except for ``wait_available``.
    """

    def __init__(self, source: Iterator[T], total: int | None = None) -> None:
        self._source = source
        self._total = total
        self._returned: deque[T] = deque()
        self._claimed = 0  # taken and not given back: sent, or in flight
        self._given_back = trio.Event()

    @property
    def exhausted(self) -> bool:
        """Every one of ``total`` messages is sent or in flight."""
        return self._total is not None and self._claimed >= self._total

    def remaining(self) -> int | None:
        """How many may still be taken (``None``: no limit)."""
        return None if self._total is None else max(self._total - self._claimed, 0)

    def take(self, count: int) -> list[T]:
        """Up to ``count`` next messages (fewer at the end of ``total``; none once exhausted)."""
        left = self.remaining()
        count = count if left is None else min(count, left)
        batch: list[T] = []
        while self._returned and len(batch) < count:
            batch.append(self._returned.popleft())
        while len(batch) < count:
            batch.append(next(self._source))
        self._claimed += len(batch)
        return batch

    def give_back(self, batch: Sequence[T]) -> None:
        """Messages taken but not sent: they are the next ones any connection takes."""
        if not batch:
            return
        self._returned.extendleft(reversed(batch))
        self._claimed -= len(batch)
        self._given_back.set()
        self._given_back = trio.Event()

    async def wait_available(self) -> None:
        """Return once there is something to take: at once, or when another connection gives some back."""
        while self.exhausted:
            await self._given_back.wait()


Handler = Callable[[WebSocketRequest], Awaitable[None]]


def streamer_port(port: int) -> int:
    """Where a simulator's second socket (its streamer, beside a REST API on ``port``) listens: the next
    port when ``port`` is chosen, a free one when it is 0."""
    if port == 65535:
        raise OSError(errno.EADDRNOTAVAIL, "the streamer listens on the next port, and there is none")
    return port + 1 if port else 0


async def serve_loopback(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    path: str = "/stream",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` until cancelled; ``task_status.started`` receives ``ws://host:port{path}``.

    Connection handlers run in this function's nursery, so cancelling it ends every connection too.
    ``path`` only shapes the URL: the server answers on any path, as the simulators do not need routing.
    A port that cannot be bound raises ``OSError`` whose ``filename`` is ``host:port``.
    """
    async with trio.open_nursery() as nursery:
        try:
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
        except OSError as exc:  # name the address: a simulator may listen on several
            raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from exc
        task_status.started(f"ws://{host}:{server.port}{path}")
