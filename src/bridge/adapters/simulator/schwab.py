"""A local Schwab: ``userPreference`` (streamer info), ``accounts?fields=positions`` and the streamer.

The streamer answers ``ADMIN LOGIN`` with code 0, or 3 (login denied) for a wrong token, or 12 when a
streamer connection for the user is already open; after ``ACCT_ACTIVITY SUBS`` it sends activity as
trades change the broker's state, and ``notify`` heartbeats.

Tokens: a fixed ``token`` is always accepted; with ``app_key``, ``app_secret`` and ``refresh_token``,
``POST /v1/oauth/token`` (HTTP Basic with key and secret, a form body) issues access tokens that live
``access_lifetime_s`` and gives the same refresh token back (Schwab does not rotate it; it expires
``refresh_lifetime_s`` after issue, 7 days at the vendor, and is then refused with ``invalid_client``).
A REST request with an expired token gets 401; the streamer checks the token at login only.
"""

from __future__ import annotations

import functools
import random
from decimal import Decimal
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.oauth import Request, Response, TokenIssuer, basic_credentials, serve_rest
from bridge.adapters.simulator.server import SentLog, serve_loopback, streamer_port

SYMBOLS: Final = ("AAPL", "MSFT", "SPY", "SPY   251219C00650000")
JSON: Final = "application/json"


@attrs.define
class SchwabState:
    accounts: tuple[str, ...]
    positions: dict[tuple[str, str], int] = attrs.Factory(dict)
    cash: dict[str, Decimal] = attrs.Factory(dict)


async def serve_schwab_simulator(
    *,
    token: str | None = None,
    app_key: str | None = None,
    app_secret: str | None = None,
    refresh_token: str | None = None,
    access_lifetime_s: float = 1800.0,
    refresh_lifetime_s: float | None = 7 * 86400.0,
    issuer: TokenIssuer | None = None,
    accounts: tuple[str, ...] = ("87654321",),
    activity_per_second: float = 5,
    total_activity: int | None = None,
    heartbeat_s: float = 10,
    seed: int = 0,
    log: SentLog | None = None,
    state: SchwabState | None = None,
    streamer_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the REST base URL (``http://…/trader/v1``).

    REST (the token endpoint included) listens on ``host``:``port`` and the streamer on the next port (0: each
    on a free one).
    """
    sent = log if log is not None else SentLog()
    broker = state if state is not None else SchwabState(accounts)
    rng = random.Random(seed)
    for account in accounts:
        broker.positions[(account, "AAPL")] = 10
        broker.cash[account] = Decimal("2500.00")
    streamer_url = ""
    open_streams = [0]

    tokens = issuer if issuer is not None else TokenIssuer(access_lifetime_s, False, refresh_lifetime_s, prefix="sw")
    if token is not None:
        tokens.static = tokens.static | {token}
    if refresh_token is not None:
        tokens.add_refresh_token(refresh_token)

    def authorized(request: Request) -> bool:
        verdict = tokens.check(request.headers.get("authorization"))
        if verdict != "valid":
            sent.extra[f"rest_refused_{verdict}"] += 1
        return verdict == "valid"

    async def oauth_token(request: Request) -> Response:
        if request.method != "POST" or basic_credentials(request) != (app_key, app_secret):
            return Response(401, b'{"error": "invalid_client", "error_description": "Unauthorized"}', JSON)
        form = request.form()
        answer = tokens.exchange(form.get("refresh_token")) if form.get("grant_type") == "refresh_token" else None
        if answer is None:
            return Response(400, b'{"error": "invalid_client", "error_description": "refresh token invalid"}', JSON)
        sent.extra["tokens_issued"] += 1
        return Response(200, orjson.dumps({**answer, "scope": "api"}), JSON)

    async def preferences(request: Request) -> Response:
        if not authorized(request):
            return Response(401, b'{"message": "invalid token"}', JSON)
        info = {"streamerSocketUrl": streamer_url, "schwabClientCustomerId": "cust-1", "schwabClientCorrelId": "corr-1",
                "schwabClientChannel": "N9", "schwabClientFunctionId": "APIAPP"}  # fmt: skip
        return Response(200, orjson.dumps({"accounts": [], "streamerInfo": [info]}), JSON)

    async def accounts_with_positions(request: Request) -> Response:
        if not authorized(request):
            return Response(401, b'{"message": "invalid token"}', JSON)
        sent.extra["polls"] += 1
        body = []
        for account in accounts:
            positions = [{"longQuantity": max(qty, 0), "shortQuantity": max(-qty, 0), "averagePrice": 100.0,
                          "marketValue": qty * 100.0, "instrument": {"symbol": symbol, "assetType": "EQUITY"}}
                         for (a, symbol), qty in broker.positions.items() if a == account and qty]  # fmt: skip
            balances = {"cashBalance": float(broker.cash[account]), "buyingPower": 20000.0,
                        "maintenanceRequirement": 1000.0, "liquidationValue": 30000.0}  # fmt: skip
            body.append({"securitiesAccount": {"accountNumber": account, "type": "MARGIN", "positions": positions,
                                               "currentBalances": balances}})  # fmt: skip
        return Response(200, orjson.dumps(body), JSON)

    def reply(command: str, code: int, message: str) -> str:
        service = "ADMIN" if command == "LOGIN" else "ACCT_ACTIVITY"
        response = {"service": service, "command": command, "requestid": "0", "content": {"code": code, "msg": message}}
        return orjson.dumps({"response": [response]}).decode()

    async def streamer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        sent.connections += 1
        try:
            login = orjson.loads(await ws.get_message())["requests"][0]
            given = login.get("parameters", {}).get("Authorization")
            if (given != streamer_token) if streamer_token is not None else tokens.check(given) != "valid":
                await ws.send_message(reply("LOGIN", 3, "Login denied"))
                sent.extra["refused"] += 1
                return
            if open_streams[0]:
                await ws.send_message(reply("LOGIN", 12, "Only one streamer connection per user"))
                return
            open_streams[0] += 1
            try:
                await ws.send_message(reply("LOGIN", 0, "server is alive"))
                subscription = orjson.loads(await ws.get_message())["requests"][0]
                await ws.send_message(reply(subscription.get("command", "SUBS"), 0, "SUBS command succeeded"))
                next_heartbeat = trio.current_time() + heartbeat_s
                while True:
                    await trio.sleep(1 / activity_per_second)
                    if trio.current_time() >= next_heartbeat:
                        await ws.send_message(orjson.dumps({"notify": [{"heartbeat": "1"}]}).decode())
                        next_heartbeat = trio.current_time() + heartbeat_s
                    if total_activity is not None and sent.messages_sent >= total_activity:
                        continue
                    account, symbol = rng.choice(accounts), rng.choice(SYMBOLS)
                    broker.positions[(account, symbol)] = 0 if rng.random() < 0.3 else rng.randint(-20, 20)
                    broker.cash[account] = Decimal(rng.randint(0, 1_000_000)) / 100
                    detail = orjson.dumps({"SchwabOrderID": str(rng.randint(1, 10**9)), "Symbol": symbol}).decode()
                    activity = {"seq": sent.messages_sent, "key": "Account Activity", "1": account,
                                "2": "OrderFillCompleted", "3": detail}  # fmt: skip
                    data = {"data": [{"service": "ACCT_ACTIVITY", "timestamp": 0, "command": "SUBS",
                                      "content": [activity]}]}  # fmt: skip
                    await ws.send_message(orjson.dumps(data).decode())
                    sent.record_good([data], {"activity": 1})
            finally:
                open_streams[0] -= 1
        except ConnectionClosed:
            pass

    routes: dict[str, Any] = {"/trader/v1/userPreference": preferences, "/trader/v1/accounts": accounts_with_positions,
                              "/v1/oauth/token": oauth_token}  # fmt: skip
    async with trio.open_nursery() as nursery:
        api_port = await nursery.start(functools.partial(serve_rest, routes, host=host, port=port))
        streamer_url = await nursery.start(functools.partial(serve_loopback, streamer, host=host,
                                                             port=streamer_port(port), path="/ws"))  # fmt: skip
        task_status.started(f"http://{host}:{api_port}/trader/v1")


__all__ = ["SchwabState", "SentLog", "TokenIssuer", "serve_schwab_simulator"]
