"""The simulated Developer Console over a real loopback WebSocket, as the demo, tests and benchmarks rely on it.

The checks of the generated data are written here from the wire contract (not with ``bridge.domain``),
so the simulator is judged against the contract, not against the code it feeds.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from bridge.adapters.simulator.console import BAD_KINDS, ConsoleScenario, SentLog, serve_console_simulator
from bridge.adapters.simulator.server import SharedMessages

START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # a Friday
TOKEN = "tok-3f9a"
COLUMNS = {
    "options_flow": {"event_ts", "symbol", "option_symbol", "side", "size", "notional", "strike", "expiration",
                     "option_type", "trade_price", "bid", "ask", "venue", "source"},
    "news_events": {"event_ts", "source", "symbol", "headline", "body", "url", "category", "sentiment", "importance"},
    "broker_accounts": {"broker", "external_account_id", "label"},
    "broker_positions": {"broker", "external_account_id", "symbol", "qty", "avg_price", "market_value", "updated_at"},
    "broker_balances": {"broker", "external_account_id", "cash", "buying_power", "maintenance_margin", "equity",
                        "updated_at"},
}  # fmt: skip
STRIKE_STEPS = {"SPY": 1000, "QQQ": 1000, "IWM": 1000, "NVDA": 1000, "SPXW": 5000, "AAPL": 2500, "TSLA": 2500}
VENUES = {"CBOE", "C2", "PHLX", "ISE", "GEMX", "ARCA", "AMEX", "MIAX", "BOX", "NSDQ", "BZX", "EDGX", "MEMX"}


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {token}".encode())]


async def serve(nursery: trio.Nursery, **options: Any) -> str:
    """A simulator with this file's token and start, unpaced unless a test says otherwise."""
    options = {"token": TOKEN, "messages_per_second": None, "start": START, **options}
    url: str = await nursery.start(functools.partial(serve_console_simulator, **options))
    return url


async def receive_texts(url: str, frames: int, *, quiet_s: float = 5, token: str = TOKEN) -> list[str]:
    """Up to ``frames`` frames; stops early when the server closes or sends nothing for ``quiet_s``."""
    received: list[str] = []
    async with open_websocket_url(url, extra_headers=bearer(token)) as ws:
        while len(received) < frames:
            with trio.move_on_after(quiet_s):
                try:
                    message = await ws.get_message()
                except ConnectionClosed:
                    break
                received.append(message if isinstance(message, str) else message.decode())
                continue
            break
    return received


async def receive_messages(url: str, frames: int, **options: Any) -> list[dict[str, Any]]:
    return [message for text in await receive_texts(url, frames, **options) for message in orjson.loads(text)]


def expected(seed: int, count: int, rate: float | None = None) -> list[dict[str, Any]]:
    """What the server must send, in order: the scenario it runs, for the same seed, start and rate."""
    return list(islice(ConsoleScenario.for_rate(seed, START, rate).messages(), count))


def moment(value: str | int) -> datetime:
    """A wire timestamp: epoch milliseconds or ISO-8601 with ``Z`` or an offset."""
    if isinstance(value, int):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def nbbo_side(price: Decimal, bid: Decimal, ask: Decimal) -> str:
    if price >= ask:
        return "buy"
    if price <= bid:
        return "sell"
    mid = (bid + ask) / 2
    return "buy" if price > mid else "sell" if price < mid else "unknown"


def dec(value: float | int | str) -> Decimal:
    return Decimal(str(value))


# --- transport -------------------------------------------------------------------------------------------------


async def test_frames_have_the_documented_shape_and_stop_at_exactly_the_total(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await serve(nursery, batch_size=20, total_messages=95, log=log)
    async with open_websocket_url(url, extra_headers=bearer(TOKEN)) as ws:
        frames = [orjson.loads(await ws.get_message()) for _ in range(5)]
        with trio.move_on_after(0.3) as idle:
            await ws.get_message()  # nothing more comes, and the connection stays open
        assert idle.cancelled_caught
        assert not ws.closed
    assert [len(frame) for frame in frames] == [20, 20, 20, 20, 15]
    messages = [message for frame in frames for message in frame]
    assert len(messages) == 95 == log.messages_sent == sum(log.messages_by_table.values())
    assert messages == log.messages == expected(0, 95)
    assert log.frames_sent == 5 and log.connections == 1
    for message in messages:
        assert set(message) == {"type", "data"}
        data = message["data"]
        assert {"id", "received_at"}.isdisjoint(data)
        assert COLUMNS[message["type"]] <= set(data)
        assert set(data) - COLUMNS[message["type"]] <= {"sequence", "conditions"}  # the allowed unknown keys
    stamps = [m["data"].get("event_ts") or m["data"].get("updated_at") for m in messages[3:]]
    assert {type(stamp) for stamp in stamps} == {int, str}  # epoch ms and ISO-8601, mixed


async def test_batch_size_one_sends_bare_objects(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await serve(nursery, batch_size=1, total_messages=7, log=log)
    frames = [orjson.loads(text) for text in await receive_texts(url, 7)]
    assert all(isinstance(frame, dict) for frame in frames)
    assert frames == log.messages == expected(0, 7)


@pytest.mark.parametrize("headers", [bearer("wrong"), [], [(b"Authorization", f"Basic {TOKEN}".encode())]])
async def test_a_wrong_or_missing_token_is_rejected_with_401(
    nursery: trio.Nursery, headers: list[tuple[bytes, bytes]]
) -> None:
    log = SentLog()
    url = await serve(nursery, log=log)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    assert caught.value.status_code == 401
    assert log.connections == 0 and log.frames_sent == 0


async def test_the_token_may_come_in_the_query_string(nursery: trio.Nursery) -> None:
    url = await serve(nursery, batch_size=3, total_messages=3)
    async with open_websocket_url(f"{url}?token={TOKEN}") as ws:
        assert len(orjson.loads(await ws.get_message())) == 3
    with pytest.raises(ConnectionRejected):
        async with open_websocket_url(f"{url}?token=nope"):
            pass


async def test_disconnects_every_n_frames_and_a_reconnect_resumes_without_gap_or_repeat(
    nursery: trio.Nursery,
) -> None:
    log = SentLog(keep_messages=True)
    url = await serve(nursery, batch_size=5, disconnect_every_frames=3, total_messages=60, log=log)
    connections = [await receive_messages(url, 100) for _ in range(4)]
    assert [len(received) for received in connections] == [15, 15, 15, 15]  # closed by the server after 3 frames
    received = [message for got in connections for message in got]
    assert log.connections == 4
    assert received == log.messages == expected(0, 60)


async def test_a_frame_the_socket_never_took_goes_to_the_next_connection(nursery: trio.Nursery) -> None:
    # paced at one frame per 50 ms: the client leaves while the server waits to send its third frame
    log = SentLog(keep_messages=True)
    url = await serve(nursery, messages_per_second=100, batch_size=5, total_messages=40, log=log)
    first = await receive_messages(url, 2)
    await trio.sleep(0.15)  # the server has taken frame 3 and failed to send it
    second = await receive_messages(url, 2)
    assert log.extra["requeued"] == 5
    assert first + second == log.messages == expected(0, 20, rate=100)


async def test_concurrent_connections_share_one_sequence_and_one_total(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await serve(nursery, messages_per_second=4000, batch_size=10, total_messages=400, log=log)
    got: dict[int, list[dict[str, Any]]] = {0: [], 1: []}

    async def client(index: int, ws: WebSocketConnection) -> None:
        while True:
            got[index].extend(orjson.loads(await ws.get_message()))

    async with (
        open_websocket_url(url, extra_headers=bearer(TOKEN)) as first,
        open_websocket_url(url, extra_headers=bearer(TOKEN)) as second,
        trio.open_nursery() as clients,
    ):
        clients.start_soon(client, 0, first)
        clients.start_soon(client, 1, second)
        with trio.fail_after(5):
            while len(got[0]) + len(got[1]) < 400:
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # and nothing beyond the total
        clients.cancel_scope.cancel()
    assert got[0] and got[1]
    assert len(got[0]) + len(got[1]) == 400 == log.messages_sent
    as_text = sorted(orjson.dumps(message).decode() for message in got[0] + got[1])
    assert as_text == sorted(orjson.dumps(message).decode() for message in expected(0, 400, rate=4000))


async def test_malformed_frames_rotate_through_every_kind_and_consume_no_good_message(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await serve(nursery, batch_size=2, bad_frame_every=3, total_messages=18, log=log)
    texts = await receive_texts(url, 13)
    assert len(texts) == 13 == log.frames_sent
    bad = texts[2::3]
    assert [kind for kind, _ in log.bad_frames] == list(BAD_KINDS) and [t for _, t in log.bad_frames] == bad
    assert log.bad_frames_by_kind == dict.fromkeys(BAD_KINDS, 1) and log.bad_frames_sent == 4
    invalid_json, unknown_type, missing_column, check_violation = bad
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(invalid_json)
    assert orjson.loads(unknown_type)["type"] not in COLUMNS
    missing = orjson.loads(missing_column)
    assert missing["type"] == "news_events" and "headline" not in missing["data"]
    violation = orjson.loads(check_violation)
    assert violation["type"] == "options_flow" and violation["data"]["side"] == "sideways"
    assert COLUMNS["options_flow"] <= set(violation["data"])  # only the check is wrong
    good = [message for i, text in enumerate(texts) if i % 3 != 2 for message in orjson.loads(text)]
    assert good == log.messages == expected(0, 18)  # the good stream is the same as without bad frames


async def test_the_rate_is_kept_and_can_be_tens_of_thousands_a_second(nursery: trio.Nursery) -> None:
    log = SentLog()
    url = await serve(nursery, messages_per_second=50_000, batch_size=100, total_messages=10_000, log=log)
    started = trio.current_time()
    frames = await receive_texts(url, 100)
    elapsed = trio.current_time() - started
    assert len(frames) == 100 and log.messages_sent == 10_000
    assert 0.18 <= elapsed < 1.0, elapsed  # 0.2 s at the rate: paced, and well over 10k messages/s


async def test_the_module_runs_by_hand_and_prints_its_url() -> None:
    command = [sys.executable, "-m", "bridge.adapters.simulator.console", "--port", "0", "--token", "dev",
               "--rate", "5000", "--batch", "10", "--total", "30"]  # fmt: skip
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(10):
            while b"\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, "the simulator exited before printing its URL"
                output += chunk
        url = next(word for word in output.decode().split() if word.startswith("ws://"))
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/stream")
        messages = await receive_messages(url, 3, token="dev")
        assert len(messages) == 30
    finally:
        process.kill()
        await process.wait()


# --- helpers ---------------------------------------------------------------------------------------------------


async def test_shared_messages_hand_out_each_message_once_and_take_back_unsent_ones() -> None:
    source = SharedMessages(iter(range(1000)), total=10)
    first, second = source.take(4), source.take(4)
    assert (first, second) == ([0, 1, 2, 3], [4, 5, 6, 7])
    source.give_back(first)
    assert source.take(3) == [0, 1, 2]
    assert source.take(10) == [3, 8, 9] and source.exhausted and source.take(5) == []
    woken = trio.Event()

    async def waiter() -> None:
        await source.wait_available()
        woken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woken.is_set()
        source.give_back([9])
    assert woken.is_set() and source.take(5) == [9]


# --- the scenario ----------------------------------------------------------------------------------------------


def test_the_scenario_is_deterministic_for_a_seed_and_a_start() -> None:
    first = list(islice(ConsoleScenario(7, START).messages(), 3000))
    assert first == list(islice(ConsoleScenario(7, START).messages(), 3000))
    assert first != list(islice(ConsoleScenario(8, START).messages(), 3000))
    later = list(islice(ConsoleScenario(7, START + timedelta(days=7)).messages(), 3000))
    assert [m["type"] for m in later] == [m["type"] for m in first] and later != first
    scenario = ConsoleScenario(7, START)
    list(islice(scenario.messages(), 3000))
    assert scenario.produced == Counter(m["type"] for m in first)


def test_generated_trades_follow_the_market_rules() -> None:
    messages = list(islice(ConsoleScenario(7, START).messages(), 20_000))
    trades = [m["data"] for m in messages if m["type"] == "options_flow"]
    assert 0.75 < len(trades) / len(messages) < 0.95
    fridays = {START.date() + timedelta(weeks=n) for n in range(6)}
    sequences: dict[str, list[int]] = {}
    for trade in trades:
        assert set(trade) == COLUMNS["options_flow"] | {"sequence", "conditions"}
        price, bid, ask = dec(trade["trade_price"]), dec(trade["bid"]), dec(trade["ask"])
        assert Decimal(0) < bid < ask
        assert trade["side"] == nbbo_side(price, bid, ask)
        assert dec(trade["notional"]) == price * trade["size"] * 100
        occ = trade["option_symbol"]
        root, yymmdd, kind, strike = occ[:-15], occ[-15:-9], occ[-9], occ[-8:]
        assert trade["symbol"] == {"SPXW": "SPX"}.get(root, root)
        assert kind == ("C" if trade["option_type"] == "call" else "P")
        assert Decimal(strike) / 1000 == dec(trade["strike"]) and int(strike) % STRIKE_STEPS[root] == 0
        expiration = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
        assert expiration.isoformat() == trade["expiration"] and expiration in fridays
        assert trade["venue"] in VENUES and trade["source"] == "dev_console"
        assert isinstance(trade["size"], int) and trade["size"] >= 1
        assert START <= moment(trade["event_ts"]) < START + timedelta(minutes=5)
        sequences.setdefault(occ, []).append(trade["sequence"])
    assert all(seq == list(range(1, len(seq) + 1)) for seq in sequences.values())  # so every trade is distinct
    sides = Counter(trade["side"] for trade in trades)
    assert min(sides.values()) > len(trades) * 0.03  # buys, sells and unknowns all occur
    outside = [t for t in trades if not dec(t["bid"]) <= dec(t["trade_price"]) <= dec(t["ask"])]
    inside = [t for t in trades if dec(t["bid"]) < dec(t["trade_price"]) < dec(t["ask"])]
    assert outside and inside
    sizes = sorted(trade["size"] for trade in trades)
    assert sizes[len(sizes) // 2] <= 5 and sizes[-1] >= 500  # mostly small, with a heavy tail
    assert {trade["symbol"] for trade in trades} == {"SPY", "QQQ", "SPX", "AAPL", "TSLA", "NVDA", "IWM"}
    spy = sorted(dec(t["strike"]) for t in trades if t["symbol"] == "SPY")
    assert Decimal(500) < spy[0] and spy[-1] < Decimal(700)  # near the money


def test_news_and_broker_updates_are_coherent() -> None:
    messages = list(islice(ConsoleScenario(3, START).messages(), 20_000))
    accounts: set[tuple[str, str]] = set()
    open_positions: set[tuple[str, str, str]] = set()
    closed = 0
    for message in messages:
        kind, data = message["type"], message["data"]
        if kind == "broker_accounts":
            accounts.add((data["broker"], data["external_account_id"]))
        elif kind in {"broker_positions", "broker_balances"}:
            assert (data["broker"], data["external_account_id"]) in accounts  # announced first
            assert set(data) == COLUMNS[kind]
            for column in COLUMNS[kind] - {"broker", "external_account_id", "symbol", "updated_at"}:
                dec(data[column])  # money and quantities are decimal strings
            if kind == "broker_positions":
                key = (data["broker"], data["external_account_id"], data["symbol"])
                if data["qty"] == "0":
                    assert key in open_positions  # a close follows an open
                    open_positions.discard(key)
                    closed += 1
                else:
                    open_positions.add(key)
    assert 2 <= len(accounts) <= 4 and {broker for broker, _ in accounts} <= {"tastytrade", "tradier", "schwab"}
    assert closed > 10
    by_type = Counter(m["type"] for m in messages)
    assert by_type["news_events"] > 500 and by_type["broker_balances"] > 200 and by_type["broker_positions"] > 500

    news = [m["data"] for m in messages if m["type"] == "news_events"]
    assert all(set(item) == COLUMNS["news_events"] and 1 <= item["importance"] <= 5 for item in news)
    assert len({(moment(item["event_ts"]), item["headline"]) for item in news}) == len(news)  # no key collides
    assert any(not item["body"].isascii() for item in news) and any("<p>" in item["body"] for item in news)
    assert any("," in (item["symbol"] or "") for item in news) and any(item["symbol"] is None for item in news)
    for table in ("broker_positions", "broker_balances"):
        stamps = [moment(m["data"]["updated_at"]) for m in messages if m["type"] == table]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # latest-wins never ties


async def test_a_binary_frame_that_is_not_utf8_is_dead_lettered_and_the_stream_goes_on(nursery: trio.Nursery) -> None:
    from trio_websocket import serve_websocket

    from bridge.adapters.feeds.console import ConsoleFeed
    from bridge.adapters.memory import MemoryRepository
    from bridge.app.pipeline import PipelineConfig, run_bridge
    from bridge.app.service import normalizers, stop_when, utc_now
    from bridge.app.stats import PipelineStats

    good = orjson.dumps({"type": "news_events", "data": {"headline": "after the bad bytes"}}).decode()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        await ws.send_message(b"\xff\xfe{not utf-8")
        await ws.send_message(good)
        await trio.sleep_forever()

    server = await nursery.start(functools.partial(serve_websocket, handler, "127.0.0.1", 0, None))
    repository, stats = MemoryRepository(), PipelineStats()
    feed = ConsoleFeed(url=f"ws://127.0.0.1:{server.port}/", token=None, clock=utc_now)
    done = stop_when(lambda: stats.total_frames >= 2)
    with trio.fail_after(20):
        await run_bridge([feed], repository, normalizers(), PipelineConfig(), stats, utc_now, done)
    (letter,) = repository.dead_letters.values()
    assert letter.reason.startswith("binary frame is not UTF-8")
    assert letter.frame.startswith("\\xff\\xfe{not utf-8")
    assert [row.headline for row in repository.news_events.values()] == ["after the bad bytes"]
