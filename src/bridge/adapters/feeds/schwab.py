"""Feed ``schwab``: Schwab's streamer (account activity) and its accounts REST API (positions, balances).

``GET /trader/v1/userPreference`` gives ``streamerInfo`` (socket URL, customer id, correl id, channel,
function id); the client logs in with ``{"requests": [{"service": "ADMIN", "command": "LOGIN", …,
"parameters": {"Authorization": TOKEN, …}}]}`` and subscribes ``ACCT_ACTIVITY``. Response code 0 is
success; 3 (login denied) is reported and retried after five minutes; 12 (only one streamer connection
per user) after a minute. Positions and balances are polled from ``GET /trader/v1/accounts?fields=positions``
every ``BRIDGE_SCHWAB_POLL_SECONDS`` as snapshots, and at once on account activity.

With a refresh token (``BRIDGE_SCHWAB_REFRESH_TOKEN``) the access token is renewed before it expires
and at once after a refusal. The streamer is logged in once per connection with the token of that
moment and keeps the session when the token later expires (the vendor's protocol has no way to hand a
logged-in connection a new token, and needs none), so a renewal never drops it.
"""

from __future__ import annotations

import functools
import itertools
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
from bridge.domain.ports import Clock, FrameSink, RetryLater
from bridge.logs import get_logger

NAME: Final = "schwab"
DEFAULT_API_URL: Final = "https://api.schwabapi.com/trader/v1"
LOGIN_DENIED: Final = 3
ONE_CONNECTION_ONLY: Final = 12
log = get_logger(__name__, feed=NAME)


@attrs.define
class _Streamer:
    credentials: Credentials
    info: dict[str, Any]
    on_activity: Any
    _ids: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    def _request(self, service: str, command: str, parameters: dict[str, Any]) -> str:
        request = {"service": service, "command": command, "requestid": str(next(self._ids)),
                   "SchwabClientCustomerId": self.info.get("schwabClientCustomerId"),
                   "SchwabClientCorrelId": self.info.get("schwabClientCorrelId"), "parameters": parameters}  # fmt: skip
        return orjson.dumps({"requests": [request]}).decode()

    async def hello(self, ws: WebSocketConnection, receive: Receive, sink: FrameSink) -> None:
        token = await self.credentials.get()
        await ws.send_message(self._request("ADMIN", "LOGIN", {
            "Authorization": token, "SchwabClientChannel": self.info.get("schwabClientChannel"),
            "SchwabClientFunctionId": self.info.get("schwabClientFunctionId")}))  # fmt: skip
        while True:
            frame = await receive()
            try:
                message = orjson.loads(frame.text)
            except orjson.JSONDecodeError:
                continue
            for response in message.get("response", []) if isinstance(message, dict) else []:
                if response.get("command") != "LOGIN":
                    continue
                code = (response.get("content") or {}).get("code")
                reason = (response.get("content") or {}).get("msg", "")
                if code == 0:
                    await ws.send_message(self._request("ACCT_ACTIVITY", "SUBS",
                                                        {"keys": "Account Activity", "fields": "0,1,2,3"}))  # fmt: skip
                    return
                refusal = f"the streamer refused the login (code {code}: {reason})"
                if code == ONE_CONNECTION_ONLY:
                    raise RetryLater(refusal, 60.0)
                await self.credentials.refused(token, refusal)  # a fixed token: RetryLater, five minutes
                raise RetryLater(f"{refusal}; renewed the token", 1.0)

    async def on_frame(self, ws: WebSocketConnection, frame: ReceivedFrame) -> ReceivedFrame:
        try:
            message = orjson.loads(frame.text)
        except orjson.JSONDecodeError:
            return frame
        if isinstance(message, dict) and any(
            isinstance(item, dict) and item.get("service") == "ACCT_ACTIVITY" for item in message.get("data", [])
        ):
            self.on_activity()
        return frame


@attrs.define
class SchwabFeed:
    api_url: str
    token: str | None = None
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
                raise ValueError("SchwabFeed needs a token or credentials")
            self.credentials = StaticToken(self.token)

    async def run(self, sink: FrameSink) -> None:
        assert self.credentials is not None
        bind_stats(self.credentials, self.stats, sink)
        credentials = self.credentials
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=15) as client:
            poller = Poller(functools.partial(self._poll, client, sink), self.poll_seconds)
            await poller.poll()
            sink.connected(self.name)
            response = await authorized(client, credentials, "GET", "/userPreference")
            info = response.json()["streamerInfo"][0]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(credentials.keep_fresh)
                nursery.start_soon(poller.run)
                streamer = _Streamer(credentials, info, poller.wake)
                session = WebSocketSession(
                    feed=self.name, url=info["streamerSocketUrl"], clock=self.clock, protocol=streamer, max_silence_s=90
                )
                await session.run(sink)

    async def _poll(self, client: httpx.AsyncClient, sink: FrameSink) -> None:
        assert self.credentials is not None
        as_of = self.clock()
        response = await authorized(client, self.credentials, "GET", "/accounts", params={"fields": "positions"})
        text = orjson.dumps({"type": "snapshot", "as_of": as_of.isoformat(), "accounts": response.json()}).decode()
        await sink.emit(ReceivedFrame(self.name, self.clock(), text))
