"""A local tastytrade: the account streamer (WebSocket), the REST positions and balances endpoints and
the OAuth token endpoint.

The streamer expects ``connect`` with a valid ``auth-token`` (else an error status and a close), checks
the token each later message carries (an expired one gets an error status and a close, so a client must
hand its renewed token over in time), acknowledges heartbeats, and streams ``CurrentPosition`` and
``AccountBalance`` changes of a few accounts whose state it keeps, so a test can compare the tables with
the broker's real state at the end. REST serves that same state (marks with ``include-marks=true``).
Nothing is replayed on reconnect, as with the real streamer.

Tokens: a fixed ``token`` is always accepted; with ``refresh_token`` and ``client_secret``,
``POST /oauth/token`` (JSON body) issues access tokens that live ``access_lifetime_s``. Every REST
request, the token call included, needs a ``User-Agent`` of the form ``product/version`` or gets 401.
"""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.oauth import Request, Response, TokenIssuer, has_product_user_agent, serve_rest
from bridge.adapters.simulator.server import SentLog, serve_loopback, streamer_port

SYMBOLS: Final = ("SPY", "QQQ", "AAPL", "TSLA", "NVDA", "SPY   251219C00650000")


@attrs.define
class BrokerState:
    """What the broker holds: the truth the bridge's tables must equal at the end."""

    accounts: tuple[str, ...]
    positions: dict[tuple[str, str], int] = attrs.Factory(dict)  # signed quantity, 0 = closed
    cash: dict[str, Decimal] = attrs.Factory(dict)

    def position_message(self, account: str, symbol: str, now: datetime) -> dict[str, Any]:
        qty = self.positions.get((account, symbol), 0)
        direction = "Zero" if qty == 0 else ("Short" if qty < 0 else "Long")
        return {"account-number": account, "symbol": symbol, "instrument-type": "Equity", "quantity": str(abs(qty)),
                "quantity-direction": direction, "average-open-price": "100.0", "close-price": "100.0",
                "multiplier": 1, "updated-at": now.isoformat()}  # fmt: skip

    def balance_message(self, account: str, now: datetime) -> dict[str, Any]:
        cash = self.cash.get(account, Decimal(0))
        return {"account-number": account, "cash-balance": str(abs(cash)),
                "cash-balance-effect": "Debit" if cash < 0 else "Credit", "net-liquidating-value": "50000.00",
                "equity-buying-power": "100000.00", "maintenance-requirement": "2500.00",
                "updated-at": now.isoformat()}  # fmt: skip


async def serve_tastytrade_simulator(
    *,
    token: str | None = None,
    client_secret: str | None = None,
    refresh_token: str | None = None,
    client_id: str | None = None,
    access_lifetime_s: float = 900.0,
    issuer: TokenIssuer | None = None,
    accounts: tuple[str, ...] = ("5WT00001", "5WT00002"),
    updates_per_second: float = 50,
    total_updates: int | None = None,
    disconnect_every_frames: int | None = None,
    seed: int = 0,
    log: SentLog | None = None,
    state: BrokerState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets (streamer ``ws://`` URL, REST ``http://`` base URL).

    REST listens on ``host``:``port`` and the streamer on the next port (0: each on a free one).
    """
    sent = log if log is not None else SentLog()
    broker = state if state is not None else BrokerState(accounts)
    rng = random.Random(seed)
    for account in accounts:  # some state exists before the bridge ever connects: only REST shows it
        broker.positions[(account, "SPY")] = 100
        broker.cash[account] = Decimal("10000.00")
    tokens = issuer if issuer is not None else TokenIssuer(access_lifetime_s, prefix="tt")
    if token is not None:
        tokens.static = tokens.static | {token}
    if refresh_token is not None:
        tokens.add_refresh_token(refresh_token)

    def valid(value: object) -> bool:
        return isinstance(value, str) and tokens.check(value) == "valid"

    def now() -> datetime:
        return datetime.now(UTC)

    def change() -> dict[str, Any]:
        account = rng.choice(accounts)
        if rng.random() < 0.7:
            symbol = rng.choice(SYMBOLS)
            key = (account, symbol)
            broker.positions[key] = 0 if key in broker.positions and rng.random() < 0.25 else rng.randint(-50, 50)
            return {"type": "CurrentPosition", "data": broker.position_message(account, symbol, now())}
        broker.cash[account] = Decimal(rng.randint(-500_000, 5_000_000)) / 100
        return {"type": "AccountBalance", "data": broker.balance_message(account, now())}

    async def streamer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        sent.connections += 1
        try:
            hello = orjson.loads(await ws.get_message())
            if hello.get("action") != "connect" or not valid(hello.get("auth-token")):
                await ws.send_message(orjson.dumps({"status": "error", "action": "connect",
                                                    "message": "invalid auth-token"}).decode())  # fmt: skip
                sent.extra["refused"] += 1
                await ws.aclose(code=1008, reason="unauthorized")
                return
            await ws.send_message(orjson.dumps({"status": "ok", "action": "connect", "web-socket-session-id": "s1",
                                                "request-id": hello.get("request-id")}).decode())  # fmt: skip
            async with trio.open_nursery() as nursery:

                async def answer_heartbeats() -> None:
                    seen = {hello.get("auth-token")}
                    while True:
                        message = orjson.loads(await ws.get_message())
                        if not valid(message.get("auth-token")):
                            await ws.send_message(orjson.dumps({"status": "error", "action": message.get("action"),
                                                                "message": "token has expired"}).decode())  # fmt: skip
                            sent.extra["expired_on_stream"] += 1
                            await ws.aclose(code=1008, reason="token expired")
                            return
                        if message.get("auth-token") not in seen:
                            seen.add(message.get("auth-token"))
                            sent.extra["tokens_handed_over"] += 1
                        if message.get("action") == "heartbeat":
                            sent.extra["heartbeats"] += 1
                            await ws.send_message(orjson.dumps({"status": "ok", "action": "heartbeat"}).decode())

                nursery.start_soon(answer_heartbeats)
                frames_here = 0
                while disconnect_every_frames is None or frames_here < disconnect_every_frames:
                    if total_updates is not None and sent.messages_sent >= total_updates:
                        await trio.sleep_forever()
                    await trio.sleep(1 / updates_per_second)
                    message = change()
                    await ws.send_message(orjson.dumps(message).decode())
                    table = "broker_positions" if message["type"] == "CurrentPosition" else "broker_balances"
                    sent.record_good([message], {table: 1})
                    frames_here += 1
                await ws.aclose(code=1001, reason="simulated disconnect")
                nursery.cancel_scope.cancel()
        except* ConnectionClosed:
            pass

    def refused(request: Request) -> Response | None:
        if not has_product_user_agent(request):
            return Response(401, b'{"error": {"code": "invalid_user_agent", "message": "User-Agent must be '
                                 b'product/version"}}')  # fmt: skip
        return None

    async def oauth_token(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or body.get("grant_type") != "refresh_token":
            return Response(400, b'{"error": "unsupported_grant_type"}')
        if body.get("client_secret") != client_secret or body.get("client_id", client_id) != client_id:
            return Response(401, b'{"error": "invalid_client"}')
        answer = tokens.exchange(body.get("refresh_token"))
        if answer is None:
            return Response(400, b'{"error": "invalid_grant"}')
        sent.extra["tokens_issued"] += 1
        return Response(200, orjson.dumps(answer))

    async def rest(account: str, kind: str, request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        verdict = tokens.check(request.headers.get("authorization"))
        if verdict != "valid":
            sent.extra[f"rest_refused_{verdict}"] += 1
            return Response(401, b'{"error": {"code": "token_invalid", "message": "This token is invalid or has '
                                 b'expired"}}')  # fmt: skip
        sent.extra[f"rest_{kind}"] += 1
        if kind == "positions":
            marks = request.query.get("include-marks") == "true"
            items = [broker.position_message(a, s, now()) | ({"mark": "101.5", "mark-price": "101.5"} if marks else {})
                     for (a, s), qty in broker.positions.items() if a == account and qty != 0]  # fmt: skip
            return Response(200, orjson.dumps({"data": {"items": items}}), "application/json")
        return Response(200, orjson.dumps({"data": broker.balance_message(account, now())}), "application/json")

    routes: dict[str, Any] = {
        f"/accounts/{account}/{kind}": functools.partial(rest, account, kind)
        for account in accounts
        for kind in ("positions", "balances")
    }
    routes["/oauth/token"] = oauth_token
    async with trio.open_nursery() as nursery:
        api_port = await nursery.start(functools.partial(serve_rest, routes, host=host, port=port))
        ws_url = await nursery.start(functools.partial(serve_loopback, streamer, host=host, port=streamer_port(port),
                                                       path="/"))  # fmt: skip
        task_status.started((ws_url, f"http://{host}:{api_port}"))


__all__ = ["BrokerState", "SentLog", "TokenIssuer", "serve_tastytrade_simulator"]
