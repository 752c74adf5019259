"""A local Developer Console: streams realistic rows for all five tables in the canonical format.

Used by ``bridge demo``, the integration tests and the benchmarks. The scenario is deterministic
for a seed and a start time; one scenario is shared by every connection, so a client that
reconnects continues with the next message (no gap, no repeat, as a real upstream with resume).

Run by hand: ``python -m bridge.adapters.simulator.console --port 8765 --token dev --rate 2000``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
import random
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.server import SentLog, bearer_token, serve_loopback

__all__ = ["ConsoleScenario", "SentLog", "serve_console_simulator"]

# underlying, OCC root, price, strike increment
UNDERLYINGS: Final = (
    ("SPY", "SPY", 600.0, 1.0),
    ("QQQ", "QQQ", 520.0, 1.0),
    ("SPX", "SPXW", 6000.0, 5.0),
    ("AAPL", "AAPL", 230.0, 2.5),
    ("TSLA", "TSLA", 350.0, 5.0),
    ("NVDA", "NVDA", 180.0, 1.0),
    ("IWM", "IWM", 240.0, 1.0),
)
VENUES: Final = ("CBOE", "C2", "PHLX", "ISE", "ARCA", "AMEX", "MIAX", "BOX", "NSDQ", "BZX", "MEMX")
ACCOUNTS: Final = (
    ("tastytrade", "5WT00001", "Tastytrade individual"),
    ("tradier", "VA000042", "Tradier margin"),
    ("schwab", "87654321", "Schwab IRA"),
)
HEADLINES: Final = (
    "{name} shares rise after earnings beat; options volume surges",
    "{name} announces buyback of ${amount}B",
    "Analyst upgrades {name} to Buy, price target ${target}",
    "{name} falls as guidance disappoints — Café-sector read-through",
    "Unusual options activity in {name}: calls outpace puts 3-to-1",
    "{name} confirms meeting with regulators; Zürich office to expand",
)
NAMES: Final = {"SPY": "S&P 500 ETF", "QQQ": "Nasdaq-100 ETF", "SPX": "S&P 500", "AAPL": "Apple",
                "TSLA": "Tesla", "NVDA": "NVIDIA", "IWM": "Russell 2000 ETF"}  # fmt: skip
CENT: Final = Decimal("0.01")
BAD_KINDS: Final = ("invalid_json", "unknown_type", "missing_column", "check_violation")


def _cents(value: float) -> Decimal:
    return Decimal(str(max(value, 0.01))).quantize(CENT, rounding=ROUND_HALF_UP)


def _fridays(start: date, count: int) -> list[date]:
    first = start + timedelta(days=(4 - start.weekday()) % 7 or 7)
    return [first + timedelta(weeks=n) for n in range(count)]


class ConsoleScenario:
    """An endless, deterministic market session: trades, news and broker updates in Console format."""

    def __init__(self, seed: int = 0, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.start = (start or datetime(2026, 11, 20, 14, 30, tzinfo=UTC)).astimezone(UTC)
        self.expirations = _fridays(self.start.date(), 4)
        self.produced: Counter[str] = Counter()
        self.sequence: Counter[str] = Counter()
        self.prices = {underlying: price for underlying, _, price, _ in UNDERLYINGS}
        self.positions: dict[tuple[str, str], dict[str, Any]] = {}
        self._count = 0

    def messages(self) -> Iterator[dict[str, Any]]:
        for broker, account, label in ACCOUNTS:
            yield self._emit("broker_accounts", {"broker": broker, "external_account_id": account, "label": label})
        while True:
            roll = self.rng.random()
            if roll < 0.86:
                yield self._emit("options_flow", self._trade())
            elif roll < 0.91:
                yield self._emit("news_events", self._news())
            elif roll < 0.97:
                yield self._emit("broker_positions", self._position())
            else:
                yield self._emit("broker_balances", self._balance())

    def _emit(self, table: str, data: dict[str, Any]) -> dict[str, Any]:
        self.produced[table] += 1
        self._count += 1
        return {"type": table, "data": data}

    def _now(self) -> datetime:
        # simulated event time advances 2 ms per message: deterministic and strictly increasing
        return self.start + timedelta(milliseconds=2 * self._count)

    def _timestamp(self) -> str | int:
        moment = self._now()
        if self._count % 2:
            return int(moment.timestamp() * 1000)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _trade(self) -> dict[str, Any]:
        rng = self.rng
        underlying, root, _, increment = rng.choice(UNDERLYINGS)
        spot = self.prices[underlying] = self.prices[underlying] * math.exp(rng.gauss(0, 0.0002))
        expiration = rng.choice(self.expirations)
        option_type = rng.choice(("call", "put"))
        strike = round(spot / increment + rng.randint(-10, 10)) * increment
        weeks = max((expiration - self.start.date()).days, 1) / 7
        intrinsic = max(spot - strike, 0) if option_type == "call" else max(strike - spot, 0)
        mid = intrinsic + spot * 0.012 * math.sqrt(weeks) * math.exp(-abs(spot - strike) / (spot * 0.03))
        half_spread = max(0.01, mid * rng.uniform(0.01, 0.04))
        bid, ask = _cents(mid - half_spread), _cents(mid + half_spread)
        if ask <= bid:
            ask = bid + CENT
        side_roll = rng.random()
        if side_roll < 0.40:
            price, side = ask, "buy"
        elif side_roll < 0.75:
            price, side = bid, "sell"
        elif side_roll < 0.9 and ask - bid >= 4 * CENT:
            price = bid + ((ask - bid) * Decimal("0.75")).quantize(CENT, rounding=ROUND_HALF_UP)
            side = "buy" if price > (bid + ask) / 2 else "sell" if price < (bid + ask) / 2 else "unknown"
        else:
            price, side = (bid + ask) / 2, "unknown"
            price = price.quantize(Decimal("0.001"))
        size = min(int(rng.paretovariate(1.3)), 5000)
        occ = f"{root}{expiration:%y%m%d}{'C' if option_type == 'call' else 'P'}{round(strike * 1000):08d}"
        self.sequence[occ] += 1
        return {
            "event_ts": self._timestamp(),
            "symbol": underlying,
            "option_symbol": occ,
            "side": side,
            "size": size,
            "notional": float(price * size * 100),
            "strike": strike,
            "expiration": expiration.isoformat(),
            "option_type": option_type,
            "trade_price": float(price),
            "bid": float(bid),
            "ask": float(ask),
            "venue": rng.choice(VENUES),
            "sequence": self.sequence[occ],
            "conditions": [rng.choice((209, 219, 227, 233))],
        }

    def _news(self) -> dict[str, Any]:
        rng = self.rng
        tickers = rng.sample(sorted(NAMES), k=rng.choice((0, 1, 1, 2)))
        name = NAMES[tickers[0]] if tickers else "Markets"
        headline = rng.choice(HEADLINES).format(name=name, amount=rng.randint(1, 90), target=rng.randint(50, 900))
        return {
            "event_ts": self._timestamp(),
            "source": "dev_console",
            "symbol": ",".join(tickers) or None,
            "headline": headline,
            "body": f"<p>{headline}.</p><p>Prices €{rng.randint(1, 999)} — more at 11.</p>",
            "url": f"https://news.example.com/{self._count}",
            "category": rng.choice(("Earnings", "Analyst Ratings", "Options", "M&A")),
            "sentiment": rng.choice(("bullish", "bearish", "neutral")),
            "importance": rng.randint(1, 5),
        }

    def _position(self) -> dict[str, Any]:
        rng = self.rng
        broker, account, _ = rng.choice(ACCOUNTS)
        symbol = rng.choice(("SPY", "QQQ", "AAPL", "TSLA", "NVDA", "SPY251219C00650000", "QQQ251219P00500000"))
        key = (account, symbol)
        closing = key in self.positions and rng.random() < 0.2
        qty = 0 if closing else rng.choice((-1, 1)) * rng.randint(1, 50) * (1 if len(symbol) > 5 else 10)
        price = self.prices.get(symbol, 5.0)
        if qty:
            self.positions[key] = {"qty": qty}
        else:
            self.positions.pop(key, None)
        return {
            "broker": broker,
            "external_account_id": account,
            "symbol": symbol,
            "qty": str(qty),
            "avg_price": str(_cents(price * rng.uniform(0.9, 1.1))),
            "market_value": str(_cents(abs(qty) * price) * (1 if qty >= 0 else -1)),
            "updated_at": self._timestamp(),
        }

    def _balance(self) -> dict[str, Any]:
        rng = self.rng
        broker, account, _ = rng.choice(ACCOUNTS)
        equity = rng.uniform(20_000, 250_000)
        return {
            "broker": broker,
            "external_account_id": account,
            "cash": str(_cents(equity * rng.uniform(0.1, 0.5))),
            "buying_power": str(_cents(equity * 2)),
            "maintenance_margin": str(_cents(equity * rng.uniform(0.05, 0.3))),
            "equity": str(_cents(equity)),
            "updated_at": self._timestamp(),
        }


def bad_frame(kind: str, n: int) -> str:
    """A malformed frame of the given kind (what the bridge must dead-letter)."""
    if kind == "invalid_json":
        return '[{"type": "options_flow", "data": {"size": 1,'
    if kind == "unknown_type":
        return orjson.dumps({"type": "quotes", "data": {"n": n}}).decode()
    if kind == "missing_column":
        return orjson.dumps(
            {"type": "news_events", "data": {"source": "dev_console", "body": f"no headline {n}"}}
        ).decode()
    return orjson.dumps(
        {
            "type": "options_flow",
            "data": {
                "event_ts": 1795185000000 + n,
                "option_symbol": "SPY251219C00650000",
                "size": 1,
                "side": "sideways",
            },
        }
    ).decode()


async def serve_console_simulator(
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    messages_per_second: float | None = 1000,
    batch_size: int = 50,
    total_messages: int | None = None,
    disconnect_every_frames: int | None = None,
    bad_frame_every: int | None = None,
    stall_after_frames: int | None = None,
    resend_on_reconnect: int = 0,
    seed: int = 0,
    start: datetime | None = None,
    log: SentLog | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the simulated Console until cancelled; ``task_status.started`` gets the ``ws://`` URL.

    Fault options: ``disconnect_every_frames`` closes each connection after N frames;
    ``stall_after_frames`` goes silent (connection open) after N frames; ``resend_on_reconnect`` sends
    the last K messages again at the start of every new connection, as an upstream with a replay
    window does (they are not counted again in ``log``).
    """
    sent = log if log is not None else SentLog()
    recent: deque[dict[str, Any]] = deque(maxlen=max(resend_on_reconnect, 1))
    messages = ConsoleScenario(seed, start).messages()
    frame_counter = itertools.count(1)
    bad_kinds = itertools.cycle(BAD_KINDS)
    pace_lock = trio.Lock()
    next_due = [0.0]

    def remaining() -> int | None:
        return None if total_messages is None else total_messages - sent.messages_sent

    async def pace(count: int) -> None:
        if messages_per_second is None:
            await trio.lowlevel.checkpoint()
            return
        async with pace_lock:
            now = trio.current_time()
            next_due[0] = max(next_due[0], now - 1.0) + count / messages_per_second
            await trio.sleep_until(next_due[0])

    async def handler(request: WebSocketRequest) -> None:
        if bearer_token(request) != token:
            await request.reject(401, body=b"invalid or missing token")
            return
        ws = await request.accept()
        sent.connections += 1
        frames_here = 0
        try:
            if resend_on_reconnect and sent.connections > 1 and recent:
                replay = list(recent)
                for start in range(0, len(replay), batch_size):
                    await ws.send_message(orjson.dumps(replay[start : start + batch_size]).decode())
                sent.extra["resent"] += len(replay)
            while disconnect_every_frames is None or frames_here < disconnect_every_frames:
                left = remaining()
                if left is not None and left <= 0:
                    await trio.sleep_forever()
                n = next(frame_counter)
                if bad_frame_every and n % bad_frame_every == 0:
                    kind = next(bad_kinds)
                    await ws.send_message(bad_frame(kind, n))
                    sent.record_bad(kind)
                else:
                    size = batch_size if left is None else min(batch_size, left)
                    batch = list(itertools.islice(messages, size))
                    await pace(len(batch))
                    payload = batch[0] if batch_size == 1 else batch
                    await ws.send_message(orjson.dumps(payload).decode())
                    sent.record_good(batch)
                    if resend_on_reconnect:
                        recent.extend(batch)
                frames_here += 1
                if stall_after_frames is not None and frames_here >= stall_after_frames:
                    sent.extra["stalls"] += 1
                    await trio.sleep_forever()  # silent, connection open: only the client can end this
            await ws.aclose(code=1001, reason="simulated disconnect")
        except ConnectionClosed:
            pass

    await serve_loopback(handler, host=host, port=port, task_status=task_status)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a simulated Developer Console stream on loopback.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="dev")
    parser.add_argument("--rate", type=float, default=2000, help="messages per second (0 = as fast as possible)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--bad-every", type=int, default=None, help="every Nth frame is malformed")
    args = parser.parse_args()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    serve_console_simulator,
                    token=args.token,
                    port=args.port,
                    messages_per_second=args.rate or None,
                    batch_size=args.batch,
                    bad_frame_every=args.bad_every,
                )
            )
            print(f"serving the simulated Developer Console at {url} (token {args.token!r}); Ctrl-C stops")

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)


if __name__ == "__main__":
    main()
