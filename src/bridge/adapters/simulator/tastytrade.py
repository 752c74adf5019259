"""A local tastytrade: the account streamer (WebSocket) and the REST positions and balances endpoints.

The streamer expects ``connect`` with the right ``auth-token`` (else an error status and a close),
acknowledges heartbeats, and streams ``CurrentPosition`` and ``AccountBalance`` changes of a few accounts
whose state it keeps, so a test can compare the tables with the broker's real state at the end. REST
serves that same state. Nothing is replayed on reconnect, as with the real streamer.
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

from bridge.adapters.http import Request, Response, serve_http
from bridge.adapters.simulator.server import SentLog, serve_loopback

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
                "quantity-direction": direction, "average-open-price": "100.0",
                "updated-at": now.isoformat()}  # fmt: skip

    def balance_message(self, account: str, now: datetime) -> dict[str, Any]:
        cash = self.cash.get(account, Decimal(0))
        return {"account-number": account, "cash-balance": str(abs(cash)),
                "cash-balance-effect": "Debit" if cash < 0 else "Credit", "net-liquidating-value": "50000.00",
                "equity-buying-power": "100000.00", "maintenance-requirement": "2500.00",
                "updated-at": now.isoformat()}  # fmt: skip


async def serve_tastytrade_simulator(
    *,
    token: str,
    accounts: tuple[str, ...] = ("5WT00001", "5WT00002"),
    updates_per_second: float = 50,
    total_updates: int | None = None,
    disconnect_every_frames: int | None = None,
    seed: int = 0,
    log: SentLog | None = None,
    state: BrokerState | None = None,
    task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets (streamer ``ws://`` URL, REST ``http://`` base URL)."""
    sent = log if log is not None else SentLog()
    broker = state if state is not None else BrokerState(accounts)
    rng = random.Random(seed)
    for account in accounts:  # some state exists before the bridge ever connects: only REST shows it
        broker.positions[(account, "SPY")] = 100
        broker.cash[account] = Decimal("10000.00")
    accepted = {token, f"Bearer {token}"}

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
            if hello.get("action") != "connect" or hello.get("auth-token") not in accepted:
                await ws.send_message(orjson.dumps({"status": "error", "action": "connect",
                                                    "message": "invalid auth-token"}).decode())  # fmt: skip
                sent.extra["refused"] += 1
                await ws.aclose(code=1008, reason="unauthorized")
                return
            await ws.send_message(orjson.dumps({"status": "ok", "action": "connect", "web-socket-session-id": "s1",
                                                "request-id": hello.get("request-id")}).decode())  # fmt: skip
            async with trio.open_nursery() as nursery:

                async def answer_heartbeats() -> None:
                    while True:
                        message = orjson.loads(await ws.get_message())
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

    async def rest(account: str, kind: str, request: Request) -> Response:
        if request.headers.get("authorization") not in accepted:
            return Response(401, b'{"error": {"code": "token_invalid"}}', "application/json")
        sent.extra[f"rest_{kind}"] += 1
        if kind == "positions":
            items = [broker.position_message(a, s, now()) for (a, s), qty in broker.positions.items()
                     if a == account and qty != 0]  # fmt: skip
            return Response(200, orjson.dumps({"data": {"items": items}}), "application/json")
        return Response(200, orjson.dumps({"data": broker.balance_message(account, now())}), "application/json")

    routes = {
        f"/accounts/{account}/{kind}": functools.partial(rest, account, kind)
        for account in accounts
        for kind in ("positions", "balances")
    }
    async with trio.open_nursery() as nursery:
        ws_url = await nursery.start(functools.partial(serve_loopback, streamer, path="/"))
        api_port = await nursery.start(functools.partial(serve_http, routes, port=0, host="127.0.0.1"))
        task_status.started((ws_url, f"http://127.0.0.1:{api_port}"))


__all__ = ["BrokerState", "SentLog", "serve_tastytrade_simulator"]
