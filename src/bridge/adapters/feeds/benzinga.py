"""Feed ``benzinga``: Benzinga's real-time news stream.

The key travels as the ``token`` query parameter (``wss://api.benzinga.com/api/v1/news/stream?token=…``);
optional ``tickers``/``channels`` filters can be put in ``BRIDGE_BENZINGA_URL``. Messages are single JSON
objects. Keep-alive: the v1 spec disconnects a client that sends any text message, while the newer docs
ask for a text ``ping``; protocol-level ping frames are allowed by both, so the feed sends those every
30 s and reconnects when a pong does not come back. News can be quiet for minutes, so silence alone
does not end the connection. HTTP 401 (bad key) waits five minutes before retrying; 429 (the key
already has a connection) waits a minute.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs

from bridge.adapters.feeds.websocket import WebSocketSession
from bridge.domain.ports import Clock, FrameSink

NAME: Final = "benzinga"
DEFAULT_URL: Final = "wss://api.benzinga.com/api/v1/news/stream"


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode({"token": token})]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@attrs.frozen
class BenzingaFeed:
    url: str
    api_key: str
    clock: Clock
    ping_interval_s: float = 30.0
    name: str = NAME
    finite: bool = False

    async def run(self, sink: FrameSink) -> None:
        session = WebSocketSession(
            feed=self.name,
            url=with_token(self.url, self.api_key),
            clock=self.clock,
            max_silence_s=None,
            ping_interval_s=self.ping_interval_s,
        )
        await session.run(sink)
