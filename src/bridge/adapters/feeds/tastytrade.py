"""Feed ``tastytrade``: the account streamer, with REST snapshots at every (re)connect.

Protocol, as the vendor documents it: the client sends ``{"action": "connect", "value": [accounts],
"auth-token": TOKEN, "request-id": N}`` and gets ``{"status": "ok", "action": "connect", …}`` (an error
status when the token is refused: reported, retried after five minutes); then heartbeats every ~20 s
(the server drops a silent client after about a minute). The streamer sends ``AccountBalance`` and
``CurrentPosition`` changes but nothing on connect and no replay after a reconnect, so after each
successful connect the feed loads every account's positions and balances over REST and emits them as a
snapshot frame (positions the snapshot no longer lists are deleted). The token is sent as the REST
``Authorization`` header value (``Bearer …``) and as the streamer's ``auth-token``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import attrs
import httpx
import orjson
from trio_websocket import WebSocketConnection

from bridge.adapters.feeds.websocket import REJECTED_CREDENTIALS_RETRY_S, Receive, WebSocketSession
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.logs import get_logger

NAME: Final = "tastytrade"
DEFAULT_URL: Final = "wss://streamer.tastyworks.com"
DEFAULT_API_URL: Final = "https://api.tastyworks.com"
HEARTBEAT_S: Final = 20.0
log = get_logger(__name__, feed=NAME)


def authorization(token: str) -> str:
    return token if token.lower().startswith("bearer ") else f"Bearer {token}"


@attrs.define
class TastytradeProtocol:
    token: str
    accounts: Sequence[str]
    api_url: str
    clock: Clock
    feed: str = NAME
    _requests: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        await ws.send_message(self._action("connect", value=list(self.accounts)))
        while True:
            frame = await receive()
            try:
                message = orjson.loads(frame.text)
            except orjson.JSONDecodeError:
                continue  # the normalizer dead-letters it
            if isinstance(message, dict) and message.get("action") == "connect":
                if message.get("status") == "ok":
                    break
                reason = message.get("message") or message.get("status")
                raise RetryLater(f"the streamer refused the token ({reason})", REJECTED_CREDENTIALS_RETRY_S)
        await self.snapshot(sink)

    async def snapshot(self, sink: FrameSink) -> None:
        """Every account's positions and balances over REST, each account as one snapshot frame."""
        headers = {"Authorization": authorization(self.token), "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15) as client:
            for account in self.accounts:
                as_of = self.clock()  # before the requests: a change streamed meanwhile is newer and kept
                bodies = []
                for kind in ("positions", "balances"):
                    response = await client.get(f"/accounts/{account}/{kind}")
                    if response.status_code in (401, 403):
                        raise RetryLater(
                            f"the REST API refused the token (HTTP {response.status_code})",
                            REJECTED_CREDENTIALS_RETRY_S,
                        )
                    response.raise_for_status()
                    bodies.append(response.json())
                text = orjson.dumps({"type": "snapshot", "account": account, "as_of": as_of.isoformat(),
                                     "positions": bodies[0], "balances": bodies[1]}).decode()  # fmt: skip
                await sink.emit(ReceivedFrame(self.feed, self.clock(), text))

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        return frame

    async def heartbeat(self, ws: WebSocketConnection) -> None:
        await ws.send_message(self._action("heartbeat"))

    def _action(self, action: str, **extra: object) -> str:
        message = {
            "action": action,
            **extra,
            "auth-token": authorization(self.token),
            "request-id": next(self._requests),
        }
        return orjson.dumps(message).decode()


@attrs.define
class TastytradeFeed:
    url: str
    api_url: str
    token: str
    accounts: Sequence[str]
    clock: Clock
    heartbeat_s: float = HEARTBEAT_S
    name: str = NAME
    finite: bool = False

    async def run(self, sink: FrameSink) -> None:
        protocol = TastytradeProtocol(self.token, self.accounts, self.api_url, self.clock, self.name)
        session = WebSocketSession(
            feed=self.name,
            url=self.url,
            clock=self.clock,
            protocol=protocol,
            max_silence_s=3 * self.heartbeat_s + 30,  # heartbeat replies arrive at least that often
            heartbeat=protocol.heartbeat,
            heartbeat_interval_s=self.heartbeat_s,
        )
        await session.run(sink)
