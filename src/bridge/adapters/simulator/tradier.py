"""A local Tradier: REST positions, balances and account-events sessions, and the account-events stream.

Fills change the broker's state and are announced as ``order`` events with status ``filled``; the REST
endpoints answer with Tradier's quirks (``"null"`` for no positions, a bare object for one). Heartbeats
come every ``heartbeat_s``. A wrong or expired token gets HTTP 401 ``Invalid Access Token``.

Tokens: a fixed ``token`` is always accepted; with ``client_id``, ``client_secret`` and ``refresh_token``,
``POST /v1/oauth/refreshtoken`` (HTTP Basic with the client's id and secret, a form body) issues access
tokens that live ``access_lifetime_s`` and, when ``rotate_refresh`` (the default), a new refresh token
each time, the old one then being refused. The account-events stream is authorized by its session id,
not the token, so it outlives the token that created it.
"""

from __future__ import annotations

import functools
import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.oauth import Request, Response, TokenIssuer, basic_credentials, serve_rest
from bridge.adapters.simulator.server import SentLog, serve_loopback, streamer_port

SYMBOLS: Final = ("AAPL", "MSFT", "SPY", "QQQ", "SPY251219C00650000")
JSON: Final = "application/json"
TEXT: Final = "text/plain"


@attrs.define
class TradierState:
    accounts: tuple[str, ...]
    positions: dict[tuple[str, str], int] = attrs.Factory(dict)
    cash: dict[str, Decimal] = attrs.Factory(dict)
    last_fill: float = 0.0


async def serve_tradier_simulator(
    *,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    refresh_token: str | None = None,
    access_lifetime_s: float = 86400.0,
    rotate_refresh: bool = True,
    issuer: TokenIssuer | None = None,
    accounts: tuple[str, ...] = ("VA000042",),
    fills_per_second: float = 5,
    total_fills: int | None = None,
    heartbeat_s: float = 60,
    seed: int = 0,
    log: SentLog | None = None,
    state: TradierState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the REST base URL (``http://…/v1``).

    REST listens on ``host``:``port`` and the account-events stream on the next port (0: each on a free one).
    """
    sent = log if log is not None else SentLog()
    broker = state if state is not None else TradierState(accounts)
    rng = random.Random(seed)
    for account in accounts:
        broker.positions[(account, "AAPL")] = 10
        broker.cash[account] = Decimal("5000.00")
    sessions: set[str] = set()
    counter = itertools.count(1)
    ws_url = ""

    tokens = issuer if issuer is not None else TokenIssuer(access_lifetime_s, rotate_refresh, prefix="tr")
    if token is not None:
        tokens.static = tokens.static | {token}
    if refresh_token is not None:
        tokens.add_refresh_token(refresh_token)

    def authorized(request: Request) -> bool:
        verdict = tokens.check(request.headers.get("authorization"))
        if verdict != "valid":
            sent.extra[f"rest_refused_{verdict}"] += 1
        return verdict == "valid"

    async def refresh(request: Request) -> Response:
        if request.method != "POST" or basic_credentials(request) != (client_id, client_secret):
            return Response(401, b'{"error": "invalid_client"}', JSON)
        form = request.form()
        answer = tokens.exchange(form.get("refresh_token")) if form.get("grant_type") == "refresh_token" else None
        if answer is None:
            return Response(400, b'{"error": "invalid_grant", "error_description": "Invalid refresh token"}', JSON)
        sent.extra["tokens_issued"] += 1
        return Response(200, orjson.dumps(answer), JSON)

    async def positions(account: str, request: Request) -> Response:
        if not authorized(request):
            return Response(401, b"Invalid Access Token", TEXT)
        sent.extra["polls"] += 1
        held = [{"symbol": s, "quantity": q, "cost_basis": q * 100, "id": n}
                for n, ((a, s), q) in enumerate(broker.positions.items()) if a == account and q]  # fmt: skip
        body: Any = "null" if not held else {"position": held[0] if len(held) == 1 else held}
        return Response(200, orjson.dumps({"positions": body}), JSON)

    async def balances(account: str, request: Request) -> Response:
        if not authorized(request):
            return Response(401, b"Invalid Access Token", TEXT)
        cash = broker.cash[account]
        body = {"account_number": account, "total_cash": float(cash), "total_equity": float(cash) + 10_000,
                "current_requirement": 500, "margin": {"stock_buying_power": float(cash) * 2}}  # fmt: skip
        return Response(200, orjson.dumps({"balances": body}), JSON)

    async def new_session(request: Request) -> Response:
        if not authorized(request):
            return Response(401, b"Invalid Access Token", TEXT)
        session = f"s-{next(counter)}"
        sessions.add(session)
        return Response(200, orjson.dumps({"stream": {"url": ws_url, "sessionid": session}}), JSON)

    async def events(request: WebSocketRequest) -> None:
        ws = await request.accept()
        sent.connections += 1
        try:
            subscription = orjson.loads(await ws.get_message())
            if subscription.get("sessionid") not in sessions:
                await ws.aclose(code=1008, reason="invalid session")
                return
            next_heartbeat = trio.current_time() + heartbeat_s
            while True:
                if total_fills is not None and sent.messages_sent >= total_fills:
                    await trio.sleep(heartbeat_s)
                else:
                    await trio.sleep(1 / fills_per_second)
                if trio.current_time() >= next_heartbeat:
                    await ws.send_message(orjson.dumps({"event": "heartbeat", "status": "active"}).decode())
                    next_heartbeat = trio.current_time() + heartbeat_s
                if total_fills is not None and sent.messages_sent >= total_fills:
                    continue
                account, symbol = rng.choice(accounts), rng.choice(SYMBOLS)
                broker.positions[(account, symbol)] = 0 if rng.random() < 0.3 else rng.randint(-20, 20)
                broker.cash[account] = Decimal(rng.randint(0, 1_000_000)) / 100
                broker.last_fill = trio.current_time()
                event = {"id": next(counter), "event": "order", "status": "filled", "account": account,
                         "symbol": symbol, "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
                await ws.send_message(orjson.dumps(event).decode())
                sent.record_good([event], {"fills": 1})
        except ConnectionClosed:
            pass

    routes: dict[str, Any] = {"/v1/accounts/events/session": new_session, "/v1/oauth/refreshtoken": refresh}
    for account in accounts:
        routes[f"/v1/accounts/{account}/positions"] = functools.partial(positions, account)
        routes[f"/v1/accounts/{account}/balances"] = functools.partial(balances, account)
    async with trio.open_nursery() as nursery:
        api_port = await nursery.start(functools.partial(serve_rest, routes, host=host, port=port))
        ws_url = await nursery.start(functools.partial(serve_loopback, events, host=host, port=streamer_port(port),
                                                       path="/v1/accounts/events"))  # fmt: skip
        task_status.started(f"http://{host}:{api_port}/v1")


__all__ = ["SentLog", "TokenIssuer", "TradierState", "serve_tradier_simulator"]
