"""A local Developer Console: streams realistic rows for all five tables in the canonical format.

Used by ``bridge demo``, the integration tests and the benchmarks. ``ConsoleScenario`` is a pure,
deterministic generator (a seed and a start time give the same messages); ``serve_console_simulator``
serves one scenario to every connection, so a client that reconnects continues with the next message
(no gap, no repeat, as a real upstream with resume), and can inject the faults the bridge must survive.

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
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from bridge.adapters.simulator.server import Pacer, SentLog, SharedMessages, serve_loopback, token_matches

__all__ = ["BAD_KINDS", "ConsoleScenario", "SentLog", "serve_console_simulator", "side_for"]

Message = dict[str, Any]


@attrs.frozen
class Underlying:
    """A traded underlying: what ``options_flow.symbol`` holds, its OCC root, a plausible spot and vol."""

    symbol: str
    root: str
    spot: float
    strike_step_m: int
    """Strike spacing near the money, in thousandths of a dollar (the OCC strike unit)."""
    vol: float
    weight: int
    """Relative share of the trades."""


UNDERLYINGS: Final = (
    Underlying("SPY", "SPY", 600.0, 1000, 0.15, 25),
    Underlying("SPX", "SPXW", 6000.0, 5000, 0.15, 20),
    Underlying("QQQ", "QQQ", 520.0, 1000, 0.20, 15),
    Underlying("TSLA", "TSLA", 350.0, 2500, 0.55, 12),
    Underlying("NVDA", "NVDA", 180.0, 1000, 0.45, 12),
    Underlying("AAPL", "AAPL", 230.0, 2500, 0.25, 9),
    Underlying("IWM", "IWM", 240.0, 1000, 0.22, 7),
)
PENNY_EVERYWHERE: Final = frozenset({"SPY", "QQQ", "IWM"})
"""Roots quoted in pennies at every price; other equity options go to nickels at $3, SPXW quotes 0.05/0.10."""
VENUES: Final = ("CBOE",) * 4 + ("PHLX",) * 3 + ("ISE",) * 3 + ("ARCA",) * 2 + ("MIAX",) * 2 + (
    "BOX", "NSDQ", "C2", "AMEX", "BZX", "MEMX", "EDGX", "GEMX")  # fmt: skip
CONDITIONS: Final = ("AUTO",) * 6 + ("SLAN", "MLET", "ISOI", "CBMO")
EXPIRY_WEIGHTS: Final = (45, 25, 15, 10, 5)
"""Share of the trades on each of the next five Friday expirations: the nearest trades most."""

ACCOUNTS: Final = (
    # Ids distinct from the broker simulators' defaults, so the demo's two sources never fight over a row.
    # broker, account, label, net deposits, margin account
    ("tastytrade", "5WC00001", "Tastytrade individual", 40_000.0, True),
    ("tradier", "VC000007", "Tradier margin", 75_000.0, True),
    ("schwab", "11223344", "Schwab IRA", 180_000.0, False),
)
POSITION_CAP: Final = 0.2
"""Largest share of an account's deposits one position may cost, so balances stay plausible."""
STOCKS: Final = ("SPY", "QQQ", "AAPL", "TSLA", "NVDA", "IWM")

NEWS_SUBJECTS: Final = (  # tickers (joined by commas), company, quote currency
    ("AAPL", "Apple", "$"), ("TSLA", "Tesla", "$"), ("NVDA", "NVIDIA", "$"), ("MELI", "MercadoLibre", "$"),
    ("NSRGY,NESN", "Nestlé", "CHF "), ("LRLCY,OR", "L'Oréal", "€"), ("SCGLY,GLE", "Société Générale", "€"),
    ("ASML", "ASML", "€"), ("TM,7203", "Toyota", "¥"),
)  # fmt: skip
MARKET_HEADLINES: Final = (
    "Stocks climb as Treasury yields ease; SPX nears record",
    "Fed minutes show officials split on a December cut",
    "ECB's Lagarde: inflation 'broadly on track' at 2.1% — euro slips",
    "Options volume hits a record as zero-day contracts top 60% of SPX trading",
)
HEADLINES: Final = (
    "{name} shares rise after earnings beat; options volume surges",
    "{name} announces ${amount}B buyback",
    "Analyst upgrades {name} to Buy, price target ${target}",
    "{name} falls as guidance disappoints",
    "Unusual options activity in {name}: calls outpace puts {ratio}-to-1",
    "{name} confirms talks with regulators; Zürich office to expand",
    "{name} raises full-year outlook; sees revenue of €{amount}B",
    "{name} CEO to step down — successor named",
)
CATEGORIES: Final = ("Earnings", "Analyst Ratings", "Options", "M&A", "Guidance", "Management")
SENTIMENTS: Final = ("bullish", "bearish", "neutral")

BAD_KINDS: Final = ("invalid_json", "unknown_type", "missing_column", "check_violation")
"""Malformed frames ``bad_frame_every`` rotates through, each a reason the bridge must dead-letter."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NEW_YORK_WINTER: Final = timezone(timedelta(hours=-5))
_AS_FAST_AS_POSSIBLE_STEP: Final = timedelta(microseconds=20)
"""Simulated time per message when unpaced: a nominal 50,000 messages/s keeps event times near the wall clock."""


def side_for(price_m: int, bid_m: int, ask_m: int) -> str:
    """The NBBO rule the bridge applies: at/above ask buy, at/below bid sell, inside by the mid."""
    if price_m >= ask_m:
        return "buy"
    if price_m <= bid_m:
        return "sell"
    twice = 2 * price_m
    return "buy" if twice > bid_m + ask_m else "sell" if twice < bid_m + ask_m else "unknown"


def _fridays(start: date, count: int) -> list[date]:
    """The next ``count`` Fridays from ``start`` (itself when a Friday: a 0DTE expiration)."""
    first = start + timedelta(days=(4 - start.weekday()) % 7)
    return [first + timedelta(weeks=n) for n in range(count)]


def _tick_m(root: str, price_m: int) -> int:
    """Minimum quoting increment in thousandths of a dollar."""
    if root == "SPXW":
        return 50 if price_m < 3000 else 100
    if root in PENNY_EVERYWHERE or price_m < 3000:
        return 10
    return 50


def _option_value(underlying: Underlying, spot: float, strike: float, call: bool, days: float) -> float:
    """A plausible premium: intrinsic value plus about 0.4 * vol * spot * sqrt(years) near the money."""
    spread_of_spot = underlying.vol * math.sqrt(max(days, 0.5) / 365) * spot
    moneyness = spot - strike if call else strike - spot
    return max(moneyness, 0.0) + 0.4 * spread_of_spot * math.exp(-0.5 * (moneyness / spread_of_spot) ** 2)


def _money(value: float) -> str:
    """A dollar amount as a decimal string, as broker APIs send money (no float rounding on the way)."""
    return f"{value:.2f}"


@attrs.define
class _Position:
    qty: int
    avg_price: float
    multiplier: int


class ConsoleScenario:
    """An endless, deterministic market session: trades, news and broker updates in Console format.

    Event times start at ``start`` and advance ``step`` per message (pick it near the send interval
    so event times track the wall clock, which the bridge checks). News, positions and balances get
    strictly increasing millisecond times per table, so no two share a natural key or a latest-wins tie.
    Call ``messages()`` once per scenario; ``produced`` counts what it yielded per table.
    """

    def __init__(self, seed: int, start: datetime, *, step: timedelta = timedelta(milliseconds=1)) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.rng = random.Random(seed)
        self.start = start.astimezone(UTC)
        self._start_us = (self.start - _EPOCH) // timedelta(microseconds=1)
        self._step_us = max(1, step // timedelta(microseconds=1))
        self.expirations = _fridays(self.start.date(), len(EXPIRY_WEIGHTS))
        self._expiry_pool = [e for e, w in zip(self.expirations, EXPIRY_WEIGHTS, strict=True) for _ in range(w)]
        self._underlying_pool = [u for u in UNDERLYINGS for _ in range(u.weight)]
        self.spots = {u.root: u.spot for u in UNDERLYINGS}
        self.produced: Counter[str] = Counter()
        self.sequence: Counter[str] = Counter()
        self._count = 0
        self._last_ms: Counter[str] = Counter()
        self.positions: dict[tuple[str, str], _Position] = {}
        self.deposits = {account: deposits for _, account, _, deposits, _ in ACCOUNTS}
        # a few option contracts the accounts hold, drawn once so positions come back to them
        self._option_holdings = [self._contract(self.rng.choice(UNDERLYINGS))[0] for _ in range(6)]

    @classmethod
    def for_rate(cls, seed: int, start: datetime, messages_per_second: float | None) -> ConsoleScenario:
        """The scenario ``serve_console_simulator`` runs: event time advances at the send rate."""
        if messages_per_second is None:
            return cls(seed, start, step=_AS_FAST_AS_POSSIBLE_STEP)
        return cls(seed, start, step=timedelta(seconds=1 / messages_per_second))

    @property
    def clock_ms(self) -> int:
        """The simulated time of the next message, in epoch milliseconds."""
        return (self._start_us + self._count * self._step_us) // 1000

    def messages(self) -> Iterator[Message]:
        """Accounts first (positions name them), then a mix: mostly trades, some news and broker updates."""
        for broker, account, label, _, _ in ACCOUNTS:
            yield self._emit("broker_accounts", {"broker": broker, "external_account_id": account, "label": label})
        rng = self.rng
        while True:
            roll = rng.random()
            if roll < 0.86:
                yield self._emit("options_flow", self._trade())
            elif roll < 0.91:
                yield self._emit("news_events", self._news())
            elif roll < 0.97:
                yield self._emit("broker_positions", self._position())
            else:
                yield self._emit("broker_balances", self._balance())

    def bad_frame(self, kind: str, n: int) -> str:
        """Frame ``n`` as a malformed frame of ``kind``; it uses no randomness, so good messages are unaffected."""
        at = self.clock_ms
        if kind == "invalid_json":
            return f'[{{"type": "options_flow", "data": {{"sequence": {n}, "size": 1,'
        if kind == "unknown_type":
            data: Message = {"symbol": "SPY", "bid": 1.25, "ask": 1.27, "event_ts": at, "sequence": n}
            return orjson.dumps({"type": "quotes", "data": data}).decode()
        if kind == "missing_column":  # news needs a headline
            data = {"event_ts": at, "source": "dev_console", "body": f"<p>an article without a headline ({n})</p>"}
            return orjson.dumps({"type": "news_events", "data": data}).decode()
        if kind == "check_violation":
            expiration = self.expirations[0]
            data = {
                "event_ts": at, "symbol": "SPY", "option_symbol": f"SPY{expiration:%y%m%d}C00600000",
                "side": "sideways", "size": 1, "notional": 125.0, "strike": 600.0,
                "expiration": expiration.isoformat(), "option_type": "call", "trade_price": 1.25, "bid": 1.2,
                "ask": 1.3, "venue": "CBOE", "source": "dev_console", "sequence": n,
            }  # fmt: skip
            return orjson.dumps({"type": "options_flow", "data": data}).decode()
        raise ValueError(f"unknown malformed-frame kind {kind!r}; expected one of {', '.join(BAD_KINDS)}")

    def _emit(self, table: str, data: Message) -> Message:
        self.produced[table] += 1
        self._count += 1
        return {"type": table, "data": data}

    def _stamp(self, table: str | None = None) -> str | int:
        """The current event time, as epoch ms or ISO-8601 (UTC ``Z`` or New York offset), mixed."""
        ms = self.clock_ms
        if table is not None:  # strictly increasing within the table
            ms = self._last_ms[table] = max(ms, self._last_ms[table] + 1)
        form = self._count % 3
        if form == 0:
            return ms
        moment = _EPOCH + timedelta(milliseconds=ms)
        if form == 1:
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return moment.astimezone(_NEW_YORK_WINTER).isoformat(timespec="milliseconds")

    def _contract(self, underlying: Underlying) -> tuple[str, date, bool, int, int]:
        """A contract near the money: (OCC symbol, expiration, is call, strike in 1/1000 $, value in 1/1000 $)."""
        rng = self.rng
        spot = self.spots[underlying.root]
        expiration = rng.choice(self._expiry_pool)
        call = rng.random() < 0.55
        step = underlying.strike_step_m
        offset = max(-15, min(15, round(rng.gauss(0, 4))))
        strike_m = max(step, (round(spot * 1000 / step) + offset) * step)
        value = _option_value(underlying, spot, strike_m / 1000, call, self._days_to(expiration))
        occ = f"{underlying.root}{expiration:%y%m%d}{'C' if call else 'P'}{strike_m:08d}"
        return occ, expiration, call, strike_m, max(round(value * 1000), 10)

    def _days_to(self, expiration: date) -> float:
        """Days from the simulated now to the 4 pm close of ``expiration`` (roughly: the session's date)."""
        return (expiration - self.start.date()).days + 0.5

    def _trade(self) -> Message:
        rng = self.rng
        underlying = rng.choice(self._underlying_pool)
        spot = self.spots[underlying.root]  # a random walk pulled back to its start, so long runs stay plausible
        self.spots[underlying.root] = spot * math.exp(rng.gauss(0, 0.0003)) + 0.001 * (underlying.spot - spot)
        occ, expiration, call, strike_m, value_m = self._contract(underlying)
        tick = _tick_m(underlying.root, value_m)
        half_spread = max(tick, value_m * rng.uniform(0.005, 0.03))
        bid = max(tick, math.floor((value_m - half_spread) / tick) * tick)
        ask = max(bid + tick, math.ceil((value_m + half_spread) / tick) * tick)
        roll = rng.random()
        if roll < 0.32:
            price = ask
        elif roll < 0.62:
            price = bid
        elif roll < 0.67:  # a sweep through the offer
            price = ask + rng.randint(1, 3) * 10
        elif roll < 0.71:  # a seller hitting below the bid
            price = max(10, bid - rng.randint(1, 3) * 10)
        elif roll < 0.90 and ask - bid >= 20:  # a negotiated print strictly inside the spread, on a cent
            price = rng.randrange(bid + 10, ask, 10)
        else:
            price = (bid + ask) // 2  # the mid (bid and ask are whole cents, so exact to 1/1000 $)
        size = min(int(rng.paretovariate(1.3)), 5000)
        self.sequence[occ] += 1
        return {
            "event_ts": self._stamp(),
            "symbol": underlying.symbol,
            "option_symbol": occ,
            "side": side_for(price, bid, ask),
            "size": size,
            "notional": price * size / 10,  # price * size * 100, exact in decimal
            "strike": strike_m / 1000,
            "expiration": expiration.isoformat(),
            "option_type": "call" if call else "put",
            "trade_price": price / 1000,
            "bid": bid / 1000,
            "ask": ask / 1000,
            "venue": rng.choice(VENUES),
            "source": "dev_console",
            "sequence": self.sequence[occ],  # distinct prints of one contract stay distinct messages
            "conditions": [rng.choice(CONDITIONS)],
        }

    def _news(self) -> Message:
        rng = self.rng
        tickers: str | None
        if rng.random() < 0.85:
            tickers, name, currency = rng.choice(NEWS_SUBJECTS)
            headline = rng.choice(HEADLINES).format(
                name=name, amount=rng.randint(1, 90), target=rng.randint(50, 900), ratio=rng.randint(2, 6)
            )
            detail = f"{name} last traded at {currency}{rng.randint(10, 999)}.{rng.randint(0, 99):02d}"
        else:
            tickers, headline = None, rng.choice(MARKET_HEADLINES)
            detail = "Index futures were little changed"
        return {
            "event_ts": self._stamp("news_events"),
            "source": "dev_console",
            "symbol": tickers,
            "headline": headline,
            "body": f"<p>{headline}.</p><p>{detail} &mdash; <em>more to follow</em>.</p>",
            "url": f"https://news.example.com/articles/{self.produced['news_events'] + 1}",
            "category": rng.choice(CATEGORIES),
            "sentiment": rng.choice(SENTIMENTS),
            "importance": rng.randint(1, 5),
        }

    def _mark(self, symbol: str) -> tuple[float, int]:
        """A position's current price and contract multiplier (an OCC symbol is marked by the premium model)."""
        if symbol in STOCKS:
            return self.spots[symbol], 1
        root, yymmdd, kind, strike = symbol[:-15], symbol[-15:-9], symbol[-9], int(symbol[-8:]) / 1000
        underlying = next(u for u in UNDERLYINGS if u.root == root)
        expiration = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
        value = _option_value(underlying, self.spots[root], strike, kind == "C", self._days_to(expiration))
        return max(round(value, 2), 0.01), 100  # a far out-of-the-money option still trades at a cent

    def _position(self) -> Message:
        """Open, resize or close (``qty`` 0) a position, sized against the account so balances stay plausible."""
        rng = self.rng
        broker, account, _, _, margin = rng.choice(ACCOUNTS)
        held = sorted(symbol for owner, symbol in self.positions if owner == account)
        # a cash account low on cash sells something rather than buying on credit it does not have
        must_sell = bool(held) and not margin and self._cash(account) < POSITION_CAP * self.deposits[account]
        candidates = held if must_sell or (held and rng.random() < 0.6) else (*STOCKS, *self._option_holdings)
        symbol = rng.choice(candidates)
        mark, multiplier = self._mark(symbol)
        position = self.positions.get((account, symbol))
        cap = max(1, int(POSITION_CAP * self.deposits[account] / (mark * multiplier)))
        lot = max(1, min(rng.randint(1, 20) * (1 if multiplier > 1 else 10), cap // 2))
        if position is None:  # opened: long, or short now and then where margin allows
            change = -lot if margin and rng.random() < 0.2 else lot
            position = self.positions[(account, symbol)] = _Position(0, mark * rng.uniform(0.97, 1.03), multiplier)
        elif must_sell or rng.random() < 0.25:
            change = -position.qty  # closed: qty 0
        else:
            direction = 1 if position.qty > 0 else -1
            reduce_by = min(lot, abs(position.qty) - 1)
            can_add = abs(position.qty) + lot <= cap
            if can_add and (reduce_by == 0 or rng.random() < 0.5):
                change = direction * lot
            else:
                change = -direction * reduce_by if reduce_by else -position.qty
        if position.qty and (position.qty > 0) == (change > 0):  # adding: average the cost in
            position.avg_price = (position.avg_price * position.qty + mark * change) / (position.qty + change)
        position.qty += change
        if position.qty == 0:
            del self.positions[(account, symbol)]
        return {
            "broker": broker,
            "external_account_id": account,
            "symbol": symbol,
            "qty": str(position.qty),
            "avg_price": f"{position.avg_price:.4f}",
            "market_value": _money(position.qty * mark * multiplier),
            "updated_at": self._stamp("broker_positions"),
        }

    def _cash(self, account: str) -> float:
        """Deposits less what the account's open positions cost (shorts add their proceeds)."""
        cost = sum(
            position.qty * position.avg_price * position.multiplier
            for (owner, _), position in self.positions.items()
            if owner == account
        )
        return self.deposits[account] - cost

    def _balance(self) -> Message:
        """An account's balances as of now: deposits less what its open positions cost, plus their value.

        Realized gains are left out on purpose: equity then stays near the deposits over any run length.
        """
        broker, account, _, _, margin = self.rng.choice(ACCOUNTS)
        cash, net, gross = self._cash(account), 0.0, 0.0
        for (owner, symbol), position in self.positions.items():
            if owner == account:
                mark, multiplier = self._mark(symbol)
                net += position.qty * mark * multiplier
                gross += abs(position.qty * mark * multiplier)
        equity = cash + net
        maintenance = 0.25 * gross if margin else 0.0
        buying_power = max(0.0, 2 * (equity - maintenance)) if margin else max(0.0, cash)
        return {
            "broker": broker,
            "external_account_id": account,
            "cash": _money(cash),
            "buying_power": _money(buying_power),
            "maintenance_margin": _money(maintenance),
            "equity": _money(equity),
            "updated_at": self._stamp("broker_balances"),
        }


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be positive or None, got {value!r}")


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
    """Serve the simulated Console until cancelled; ``task_status.started`` gets ``ws://127.0.0.1:PORT/stream``.

    Clients authenticate with ``Authorization: Bearer <token>`` or ``?token=``; others get HTTP 401.
    ``messages_per_second`` is the server's rate over all connections (``None``: as fast as possible);
    ``batch_size`` messages go in one array frame (1: a bare object). ``total_messages`` stops sending
    after that many good messages over all connections (connections then stay open, idle). ``start``
    defaults to now, so event times pass the bridge's plausibility check.

    Faults: ``disconnect_every_frames`` closes each connection after N frames; ``bad_frame_every`` makes
    every Nth frame malformed (rotating through ``BAD_KINDS``; they consume no good message);
    ``stall_after_frames`` goes silent (connection open) after N frames on a connection;
    ``resend_on_reconnect`` sends the last K messages again at the start of every later connection,
    as an upstream with a replay window does (counted in ``log.extra['resent']``, not as sent again).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for name, value in (
        ("messages_per_second", messages_per_second),
        ("disconnect_every_frames", disconnect_every_frames),
        ("bad_frame_every", bad_frame_every),
        ("stall_after_frames", stall_after_frames),
    ):
        _check_positive(name, value)
    if total_messages is not None and total_messages < 0:
        raise ValueError(f"total_messages must not be negative, got {total_messages}")
    sent = log if log is not None else SentLog()
    scenario = ConsoleScenario.for_rate(seed, start or datetime.now(UTC), messages_per_second)
    source = SharedMessages(scenario.messages(), total_messages)
    pacer = Pacer(messages_per_second)
    recent: deque[Message] = deque(maxlen=max(resend_on_reconnect, 1))
    frames = itertools.count(1)  # frame numbers over all connections, for ``bad_frame_every``
    bad_kinds = itertools.cycle(BAD_KINDS)

    async def send_good(ws: WebSocketConnection) -> bool:
        """One frame of good messages; False if another connection took the last ones meanwhile."""
        left = source.remaining()
        await pacer.wait(batch_size if left is None else min(batch_size, left))
        batch = source.take(batch_size)
        if not batch:
            return False
        text = orjson.dumps(batch[0] if batch_size == 1 else batch).decode()
        handed = False
        try:
            await ws.send_message(text)
            handed = True
        finally:
            if not handed:  # closed (or cancelled) before the socket took it: the next connection sends it
                source.give_back(batch)
                sent.extra["requeued"] += len(batch)
        sent.record_good(batch)
        if resend_on_reconnect:
            recent.extend(batch)
        return True

    async def send_bad(ws: WebSocketConnection, n: int) -> None:
        await pacer.wait(1)
        kind = next(bad_kinds)
        text = scenario.bad_frame(kind, n)
        await ws.send_message(text)
        sent.record_bad(kind, text)

    async def stream(ws: WebSocketConnection) -> None:
        if resend_on_reconnect and sent.connections > 1 and recent:
            replay = list(recent)
            for first in range(0, len(replay), batch_size):
                await ws.send_message(orjson.dumps(replay[first : first + batch_size]).decode())
            sent.extra["resent"] += len(replay)
        frames_here = 0
        while disconnect_every_frames is None or frames_here < disconnect_every_frames:
            await source.wait_available()  # after ``total_messages``: idle, connection open
            n = next(frames)
            if bad_frame_every and n % bad_frame_every == 0:
                await send_bad(ws, n)
            elif not await send_good(ws):
                continue
            frames_here += 1
            if stall_after_frames is not None and frames_here >= stall_after_frames:
                sent.extra["stalls"] += 1
                await trio.sleep_forever()  # silent, connection open: only the client can end this
        await ws.aclose(code=1001, reason="simulated disconnect")

    async def handler(request: WebSocketRequest) -> None:
        try:
            if not token_matches(request, token):
                await request.reject(401, body=b"invalid or missing token")
                return
            ws = await request.accept()
            sent.connections += 1
            await stream(ws)
        except ConnectionClosed:
            pass  # the client went away (or we closed it): this connection is over

    await serve_loopback(handler, host=host, port=port, path="/stream", task_status=task_status)


def main(argv: list[str] | None = None) -> None:
    """``python -m bridge.adapters.simulator.console``: serve on a fixed port for manual testing."""
    parser = argparse.ArgumentParser(description="Serve a simulated Developer Console stream on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", default="dev")
    parser.add_argument("--rate", type=float, default=2000, help="messages per second (0 = as fast as possible)")
    parser.add_argument("--batch", type=int, default=50, help="messages per frame (1 = bare objects)")
    parser.add_argument("--total", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--bad-every", type=int, default=None, help="every Nth frame is malformed")
    parser.add_argument("--disconnect-every", type=int, default=None, help="close connections after N frames")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    serve_console_simulator,
                    token=args.token,
                    host=args.host,
                    port=args.port,
                    messages_per_second=args.rate or None,
                    batch_size=args.batch,
                    total_messages=args.total,
                    bad_frame_every=args.bad_every,
                    disconnect_every_frames=args.disconnect_every,
                    seed=args.seed,
                )
            )
            print(f"serving the simulated Developer Console at {url} (token {args.token!r}); Ctrl-C stops", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)


if __name__ == "__main__":
    main()
