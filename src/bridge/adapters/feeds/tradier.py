"""Feed ``tradier``: positions and balances polled over REST, polled at once after each fill.

Tradier streams account events (orders) but serves positions and balances over REST only. The feed
polls ``GET /accounts/{id}/positions`` and ``/balances`` every ``BRIDGE_TRADIER_POLL_SECONDS`` and emits
each poll as a snapshot frame (positions absent from it are deleted). It also opens the account-events
stream — ``POST /accounts/events/session`` gives a session id (valid five minutes, so a new one per
connection), then ``{"events": ["order"], "sessionid": …}`` on the WebSocket — and polls immediately
when an order fills, so a change shows within about a second. The stream sends a heartbeat about every
60 s; silence beyond 150 s reconnects. A refused fixed token (HTTP 401/403) waits five minutes; a
refreshing one (``BRIDGE_TRADIER_REFRESH_TOKEN``) is renewed before it expires and at once after a refusal,
without closing the stream (its session id, not the token, authorizes it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

import attrs
import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection

from bridge.adapters.credentials import USER_AGENT, Credentials, CredentialStats, StaticToken, bind_stats
from bridge.adapters.feeds.polling import Poller, authorized
from bridge.adapters.feeds.websocket import Receive, WebSocketSession
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink
from bridge.logs import get_logger

NAME: Final = "tradier"
DEFAULT_API_URL: Final = "https://api.tradier.com/v1"
FILL_STATUSES: Final = frozenset({"filled", "partially_filled"})
log = get_logger(__name__, feed=NAME)


@attrs.define
class _Events:
    """The account-events stream's protocol: subscribe with the session id; a fill wakes the poller."""

    session_id: str
    on_fill: Any

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        await ws.send_message(orjson.dumps({"events": ["order"], "sessionid": self.session_id}).decode())

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        try:
            event = orjson.loads(frame.text)
        except orjson.JSONDecodeError:
            return frame
        if isinstance(event, dict) and event.get("event") == "order" and event.get("status") in FILL_STATUSES:
            self.on_fill()
        return frame


@attrs.define
class TradierFeed:
    api_url: str
    token: str | None = None
    accounts: Sequence[str] = ()
    clock: Clock = attrs.field(kw_only=True)
    poll_seconds: float = 5.0
    name: str = NAME
    finite: bool = False
    credentials: Credentials | None = None
    """A refreshing token (``bridge.adapters.credentials``); without it, ``token`` is used as it is."""
    stats: CredentialStats | None = None

    def __attrs_post_init__(self) -> None:
        if self.credentials is None:
            if self.token is None:
                raise ValueError("TradierFeed needs a token or credentials")
            self.credentials = StaticToken(self.token)

    async def run(self, sink: FrameSink) -> None:
        assert self.credentials is not None
        bind_stats(self.credentials, self.stats, sink)
        credentials = self.credentials
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15) as client:
            poller = Poller(functools.partial(self._poll, client, sink), self.poll_seconds)
            await poller.poll()  # state first: the stream only says that something changed
            sink.connected(self.name)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(credentials.keep_fresh)
                nursery.start_soon(poller.run)
                response = await authorized(client, credentials, "POST", "/accounts/events/session")
                stream = response.json()["stream"]
                events = _Events(stream["sessionid"], poller.wake)
                session = WebSocketSession(
                    feed=self.name, url=stream["url"], clock=self.clock, protocol=events, max_silence_s=150
                )
                await session.run(sink)

    async def _poll(self, client: httpx.AsyncClient, sink: FrameSink) -> None:
        assert self.credentials is not None
        for account in self.accounts:
            as_of = self.clock()
            bodies = []
            for kind in ("positions", "balances"):
                response = await authorized(client, self.credentials, "GET", f"/accounts/{account}/{kind}")
                bodies.append(response.json())
            text = orjson.dumps({"type": "snapshot", "account": account, "as_of": as_of.isoformat(),
                                 "positions": bodies[0], "balances": bodies[1]}).decode()  # fmt: skip
            await sink.emit(ReceivedFrame(self.name, self.clock(), text))
