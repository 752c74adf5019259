"""Feed ``benzinga``: Benzinga's real-time news stream.

The key travels as the ``token`` query parameter (``wss://api.benzinga.com/api/v1/news/stream?token=…``);
optional ``tickers``/``channels`` filters can be put in ``BRIDGE_BENZINGA_URL``. Messages are single JSON
objects. Keep-alive: the v1 spec disconnects a client that sends any text message, while the newer docs
ask for a text ``ping``; protocol-level ping frames are allowed by both, so the feed sends those every
30 s and reconnects when a pong does not come back. News can be quiet for minutes, so silence alone
does not end the connection. HTTP 401 (bad key) waits five minutes before retrying; 429 (the key
already has a connection) waits a minute.

Replay: the newer docs give the stream a text action ``replay``, which "replays up to the last 100
messages" the key was sent. After a reconnect (not on the first connection) the feed sends it, so
news published while it was away is not lost; the rows are upserts by article, so the overlap with
what already landed writes nothing twice. An endpoint that follows the v1 spec closes the connection
on any text instead: when the server closes the connection within ``REPLAY_REFUSED_WITHIN_S`` of a
replay and before sending anything, the feed takes replay as refused and stops asking.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import orjson
import trio
from trio_websocket import WebSocketConnection

from bridge.adapters.feeds.websocket import Receive, StreamClosed, WebSocketSession
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink
from bridge.domain.values import InvalidValue, optional_timestamp
from bridge.logs import get_logger

NAME: Final = "benzinga"
DEFAULT_URL: Final = "wss://api.benzinga.com/api/v1/news/stream"
REPLAY: Final = "replay"
"""The action's text, sent as is (the docs' ``ActionRequest``: ``text/plain``, ``ping`` or ``replay``)."""
REPLAY_REFUSED_WITHIN_S: Final = 5.0
log = get_logger(__name__, feed=NAME)


def event_time(text: str) -> datetime | None:
    """A message's ``data.timestamp`` (news is a few messages a second: decoding each costs nothing)."""
    try:
        message = orjson.loads(text)
        return optional_timestamp("data.timestamp", message["data"]["timestamp"])
    except (orjson.JSONDecodeError, InvalidValue, KeyError, TypeError):
        return None


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode({"token": token})]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@attrs.define
class BenzingaProtocol:
    """Asks for a replay after every reconnect, until the endpoint shows it does not take one."""

    replay: bool = True
    connections: int = 0
    replays_sent: int = 0
    replay_refused: bool = False
    _replay_sent_at: float | None = attrs.field(default=None, init=False)
    """When this connection's replay went out, while nothing has arrived since."""
    newest_seen: datetime | None = None
    """The newest event time (``data.timestamp``) of any message received (the REST backfill starts there)."""
    newest_before_connection: datetime | None = None
    replay_sent: bool = False
    """On this connection."""
    replay_reached_back: bool = False
    """A message received after this connection's replay request is no newer than what was seen before it:
    the replay reached back to what had already arrived, so it covers the gap."""

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        self.connections += 1
        self._replay_sent_at = None
        self.newest_before_connection = self.newest_seen
        self.replay_sent = self.replay_reached_back = False
        if self.replay and not self.replay_refused and self.connections > 1:
            self.replay_sent = True
            await ws.send_message(REPLAY)
            self.replays_sent += 1
            self._replay_sent_at = trio.current_time()
            log.info("asked for a replay of the latest messages after reconnecting")

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        self._replay_sent_at = None
        at = event_time(frame.text)
        if at is not None:
            before = self.newest_before_connection
            if self.replay_sent and before is not None and at <= before:
                self.replay_reached_back = True
            if self.newest_seen is None or at > self.newest_seen:
                self.newest_seen = at
        return frame

    def replay_covered(self) -> bool:
        """Whether this connection's replay covers the gap before it (see ``replay_reached_back``)."""
        return self.replay_sent and self.replay_reached_back

    def closed_by_server(self) -> None:
        """The server closed the connection: right after a replay and before any message, it refused it."""
        sent_at, self._replay_sent_at = self._replay_sent_at, None
        if sent_at is not None and trio.current_time() - sent_at <= REPLAY_REFUSED_WITHIN_S:
            self.replay_refused = True
            log.warning("the server closed the connection after a replay request; not asking for replays again")


@attrs.define
class BenzingaFeed:
    url: str
    api_key: str
    clock: Clock
    ping_interval_s: float = 30.0
    name: str = NAME
    finite: bool = False
    replay_on_reconnect: bool = True
    backfill: Any = None
    """The backfill service of this feed's gaps (``bridge.app.backfill``), when one is wired."""
    protocol: BenzingaProtocol = attrs.field(init=False)

    @protocol.default
    def _protocol(self) -> BenzingaProtocol:
        return BenzingaProtocol(replay=self.replay_on_reconnect)

    async def run(self, sink: FrameSink) -> None:
        session = WebSocketSession(
            feed=self.name,
            url=with_token(self.url, self.api_key),
            clock=self.clock,
            protocol=self.protocol,
            max_silence_s=None,
            ping_interval_s=self.ping_interval_s,
        )
        try:
            await session.run(sink)
        except StreamClosed:
            self.protocol.closed_by_server()
            raise
