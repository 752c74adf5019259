"""The simulated Developer Console over a real loopback WebSocket, as the demo and tests rely on it."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from bridge.adapters.simulator.console import ConsoleScenario, SentLog, serve_console_simulator

START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


async def receive_all(url: str, token: str, frames: int) -> list[Any]:
    """Up to ``frames`` frames, decoded; stops early when the server closes the connection."""
    return [orjson.loads(text) for text in await receive_texts(url, token, frames)]


async def receive_texts(url: str, token: str, frames: int) -> list[str]:
    received: list[str] = []
    async with open_websocket_url(url, extra_headers=[(b"Authorization", f"Bearer {token}".encode())]) as ws:
        with trio.move_on_after(5):
            while len(received) < frames:
                try:
                    message = await ws.get_message()
                    received.append(message if isinstance(message, str) else message.decode())
                except ConnectionClosed:
                    break
    return received


async def test_streams_frames_of_the_documented_shape_and_stops_at_the_total(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await nursery.start(
        functools.partial(
            serve_console_simulator, token="tok", messages_per_second=None, batch_size=20, total_messages=95, log=log
        )
    )
    frames = await receive_all(url, "tok", 5)
    messages = [message for frame in frames for message in frame]
    assert len(messages) == 95 == log.messages_sent
    assert [len(frame) for frame in frames] == [20, 20, 20, 20, 15]
    assert {message["type"] for message in messages} <= {
        "options_flow",
        "news_events",
        "broker_accounts",
        "broker_positions",
        "broker_balances",
    }
    assert [m["type"] for m in messages[:3]] == ["broker_accounts"] * 3
    assert all(set(m) == {"type", "data"} and "id" not in m["data"] for m in messages)


async def test_a_wrong_token_is_rejected_with_401(nursery: trio.Nursery) -> None:
    url = await nursery.start(functools.partial(serve_console_simulator, token="right"))
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url, extra_headers=[(b"Authorization", b"Bearer wrong")]):
            pass
    assert caught.value.status_code == 401


async def test_disconnects_every_n_frames_and_resumes_without_gap_or_repeat(nursery: trio.Nursery) -> None:
    log = SentLog(keep_messages=True)
    url = await nursery.start(
        functools.partial(
            serve_console_simulator,
            token="t",
            messages_per_second=None,
            batch_size=5,
            disconnect_every_frames=3,
            total_messages=60,
            log=log,
        )
    )
    received: list[Any] = []
    for _ in range(4):
        received += [m for frame in await receive_all(url, "t", 100) for m in frame]
    assert log.connections == 4
    assert received == log.messages == log.messages[:60]


async def test_malformed_frames_rotate_through_every_kind(nursery: trio.Nursery) -> None:
    log = SentLog()
    url = await nursery.start(
        functools.partial(
            serve_console_simulator,
            token="t",
            messages_per_second=None,
            batch_size=2,
            bad_frame_every=3,
            total_messages=18,
            log=log,
        )
    )
    texts = await receive_texts(url, "t", 13)
    assert log.bad_frames_by_kind == {"invalid_json": 1, "unknown_type": 1, "missing_column": 1, "check_violation": 1}
    assert log.messages_sent == 18
    assert len(texts) == 13
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(texts[2])


def test_the_scenario_is_deterministic_and_internally_consistent() -> None:
    first = list(islice(ConsoleScenario(7, START).messages(), 3000))
    assert first == list(islice(ConsoleScenario(7, START).messages(), 3000))
    trades = [m["data"] for m in first if m["type"] == "options_flow"]
    assert len(trades) > 2000
    for trade in trades:
        price, bid, ask = (Decimal(str(trade[k])) for k in ("trade_price", "bid", "ask"))
        mid = (bid + ask) / 2
        expected = (
            "buy"
            if price >= ask
            else "sell"
            if price <= bid
            else "buy"
            if price > mid
            else "sell"
            if price < mid
            else "unknown"
        )
        assert trade["side"] == expected
        assert Decimal(str(trade["notional"])) == pytest.approx(price * trade["size"] * 100)
        occ = trade["option_symbol"]
        assert occ[-9] == ("C" if trade["option_type"] == "call" else "P")
        assert Decimal(occ[-8:]) / 1000 == Decimal(str(trade["strike"]))
        assert date(2000 + int(occ[-15:-13]), int(occ[-13:-11]), int(occ[-11:-9])).isoformat() == trade["expiration"]
    keys = {(t["option_symbol"], t["sequence"]) for t in trades}
    assert len(keys) == len(trades)  # every trade is distinct


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
