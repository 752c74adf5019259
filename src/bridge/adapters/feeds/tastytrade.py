"""Feed ``tastytrade``: the account streamer, with REST snapshots at every (re)connect.

Protocol, as the vendor documents it: the client sends ``{"action": "connect", "value": [accounts],
"auth-token": TOKEN, "request-id": N}`` and gets ``{"status": "ok", "action": "connect", …}`` (an error
status when the token is refused); then heartbeats every ~20 s (the server drops a silent client after
about a minute). The streamer sends ``AccountBalance`` and ``CurrentPosition`` changes but nothing on
connect and no replay after a reconnect, so after each successful connect the feed loads every
account's positions (with ``include-marks=true``, for current values) and balances over REST and emits
them as a snapshot frame (positions the snapshot no longer lists are deleted).

The token is the REST ``Authorization`` value (``Bearer …``) and the ``auth-token`` of every streamer
message. Every message carries it (as the vendor's SDK sends it), so a renewed token reaches an open
connection with the next heartbeat: renewing never drops the stream. A refused fixed token waits five
minutes; a refused refreshing token is renewed and the connection made again at once. Every request
carries a ``User-Agent`` of the form ``product/version``, which tastytrade requires.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import attrs
import httpx
import orjson
import trio
from trio_websocket import WebSocketConnection

from bridge.adapters.credentials import USER_AGENT, Credentials, CredentialStats, StaticToken, bind_stats
from bridge.adapters.feeds.polling import authorized
from bridge.adapters.feeds.websocket import Receive, WebSocketSession
from bridge.domain.models import ReceivedFrame
from bridge.domain.ports import Clock, FrameSink
from bridge.logs import get_logger

NAME: Final = "tastytrade"
DEFAULT_URL: Final = "wss://streamer.tastyworks.com"
DEFAULT_API_URL: Final = "https://api.tastyworks.com"
HEARTBEAT_S: Final = 20.0
log = get_logger(__name__, feed=NAME)


def authorization(token: str) -> str:
    return token if token.lower().startswith("bearer ") else f"Bearer {token}"


class TokenRenewed(Exception):
    """The streamer refused a token that has since been renewed: connect again now."""


@attrs.define
class TastytradeProtocol:
    credentials: Credentials
    accounts: Sequence[str]
    api_url: str
    clock: Clock
    feed: str = NAME
    _requests: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        token = await self.credentials.get()
        await ws.send_message(self._action(token, "connect", value=list(self.accounts)))
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
                await self.credentials.refused(token, f"the streamer refused the token ({reason})")
                raise TokenRenewed(f"the streamer refused the token ({reason}); renewed it, connecting again")
        await self.snapshot(sink)

    async def snapshot(self, sink: FrameSink) -> None:
        """Every account's positions and balances over REST, each account as one snapshot frame."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15) as client:
            for account in self.accounts:
                as_of = self.clock()  # before the requests: a change streamed meanwhile is newer and kept
                positions = await authorized(client, self.credentials, "GET", f"/accounts/{account}/positions",
                                             params={"include-marks": "true"})  # fmt: skip
                balances = await authorized(client, self.credentials, "GET", f"/accounts/{account}/balances")
                text = orjson.dumps({"type": "snapshot", "account": account, "as_of": as_of.isoformat(),
                                     "positions": positions.json(), "balances": balances.json()}).decode()  # fmt: skip
                await sink.emit(ReceivedFrame(self.feed, self.clock(), text))

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        return frame

    async def heartbeat(self, ws: WebSocketConnection) -> None:
        """Also how a renewed token reaches the open connection: each message carries the current one."""
        await ws.send_message(self._action(await self.credentials.get(), "heartbeat"))

    def _action(self, token: str, action: str, **extra: object) -> str:
        message = {"action": action, **extra, "auth-token": authorization(token), "request-id": next(self._requests)}
        return orjson.dumps(message).decode()


@attrs.define
class TastytradeFeed:
    url: str
    api_url: str
    token: str | None = None
    accounts: Sequence[str] = ()
    clock: Clock = attrs.field(kw_only=True)
    heartbeat_s: float = HEARTBEAT_S
    name: str = NAME
    finite: bool = False
    credentials: Credentials | None = None
    """A refreshing token (``bridge.adapters.credentials``); without it, ``token`` is used as it is."""
    stats: CredentialStats | None = None

    def __attrs_post_init__(self) -> None:
        if self.credentials is None:
            if self.token is None:
                raise ValueError("TastytradeFeed needs a token or credentials")
            self.credentials = StaticToken(self.token)

    async def run(self, sink: FrameSink) -> None:
        assert self.credentials is not None
        bind_stats(self.credentials, self.stats, sink)
        protocol = TastytradeProtocol(self.credentials, self.accounts, self.api_url, self.clock, self.name)
        session = WebSocketSession(
            feed=self.name,
            url=self.url,
            clock=self.clock,
            headers=(("User-Agent", USER_AGENT),),
            protocol=protocol,
            max_silence_s=3 * self.heartbeat_s + 30,  # heartbeat replies arrive at least that often
            heartbeat=protocol.heartbeat,
            heartbeat_interval_s=self.heartbeat_s,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.credentials.keep_fresh)
            await session.run(sink)
            nursery.cancel_scope.cancel()
