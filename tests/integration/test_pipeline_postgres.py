"""The whole pipeline on real parts: loopback WebSocket servers, the replay feed, real PostgreSQL."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import trio

from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.recording import RecordingWriter, encode_entry
from bridge.adapters.replay import ReplayFeed
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame, Table
from bridge.domain.policies import BackoffPolicy, BatchPolicy
from tests.integration.helpers import never, query

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CONFIG = PipelineConfig(
    batching=BatchPolicy(max_rows=500, max_ms=50),
    write_retry=BackoffPolicy(initial_s=0.05, max_s=0.5),
    feed_restart=BackoffPolicy(initial_s=0.01, max_s=0.1),
)


def console_frame(n: int, messages: list[dict[str, Any]] | dict[str, Any] | str) -> ReceivedFrame:
    text = messages if isinstance(messages, str) else orjson.dumps(messages).decode()
    return ReceivedFrame("console", AT + timedelta(milliseconds=n), text)


def good_frames() -> list[ReceivedFrame]:
    account = {"broker": "tastytrade", "external_account_id": "5WT0001"}
    return [
        console_frame(
            0,
            [
                {
                    "type": "options_flow",
                    "data": {
                        "event_ts": "2026-11-20T14:29:59.100Z",
                        "option_symbol": "SPY251219C00650000",
                        "size": 5,
                        "trade_price": 2.35,
                        "bid": 2.30,
                        "ask": 2.35,
                        "venue": "CBOE",
                    },
                },
                {
                    "type": "options_flow",
                    "data": {
                        "event_ts": 1795185000000,
                        "option_symbol": "SPXW251219P06000000",
                        "size": 1,
                        "trade_price": 41.0,
                        "bid": 40.5,
                        "ask": 41.5,
                        "side": "unknown",
                        "source": "opra",
                    },
                },
            ],
        ),
        console_frame(
            1,
            {
                "type": "news_events",
                "data": {
                    "event_ts": "2026-11-20T14:00:00Z",
                    "source": "benzinga",
                    "headline": "Nestlé raises guidance €",
                    "symbol": "NSRGY,NESN",
                    "body": "<p>Très bien</p>",
                },
            },
        ),
        console_frame(2, {"type": "broker_accounts", "data": {**account, "label": "Main"}}),
        console_frame(
            3,
            {
                "type": "broker_positions",
                "data": {
                    **account,
                    "symbol": "SPY",
                    "qty": 100,
                    "avg_price": "601.5",
                    "updated_at": "2026-11-20T14:00:00Z",
                },
            },
        ),
        console_frame(
            4,
            {
                "type": "broker_balances",
                "data": {**account, "cash": "1200.25", "equity": 65000, "updated_at": "2026-11-20T14:00:00Z"},
            },
        ),
    ]


def write_recording(path: Path, frames: list[ReceivedFrame]) -> Path:
    path.write_bytes(b"".join(encode_entry(frame) for frame in frames))
    return path


async def replay(repository: PostgresRepository, *paths: Path) -> PipelineStats:
    stats = PipelineStats()
    feed = ReplayFeed(list(paths))
    assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, never)
    return stats


async def test_a_replayed_recording_fills_all_five_tables(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    recording = write_recording(tmp_path / "session.jsonl", good_frames())
    await replay(repository, recording)

    trades = query(
        database_url,
        "select symbol, option_symbol, side, size, notional, strike, expiration,"
        " option_type, bid, ask, venue, source from options_flow order by symbol",
    )
    assert [
        (t[0], t[1], t[2], float(t[3]), float(t[4]), float(t[5]), str(t[6]), t[7], t[10], t[11]) for t in trades
    ] == [
        ("SPX", "SPXW251219P06000000", "unknown", 1, 4100, 6000, "2025-12-19", "put", None, "opra"),
        ("SPY", "SPY251219C00650000", "buy", 5, 1175, 650, "2025-12-19", "call", "CBOE", "dev_console"),
    ]
    assert query(database_url, "select headline, symbol, body, source from news_events") == [
        ("Nestlé raises guidance €", "NSRGY,NESN", "<p>Très bien</p>", "benzinga")
    ]
    assert query(database_url, "select broker, external_account_id, label from broker_accounts") == [
        ("tastytrade", "5WT0001", "Main")
    ]
    assert query(
        database_url,
        "select p.symbol, p.qty::int, a.external_account_id from broker_positions p"
        " join broker_accounts a on a.id = p.broker_account_id",
    ) == [("SPY", 100, "5WT0001")]
    assert query(database_url, "select cash::text, equity::int from broker_balances") == [("1200.25", 65000)]
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_replaying_twice_changes_nothing(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    recording = write_recording(tmp_path / "session.jsonl", [*good_frames(), console_frame(9, "{bad json")])
    await replay(repository, recording)
    tables = [
        "options_flow",
        "news_events",
        "broker_accounts",
        "broker_positions",
        "broker_balances",
        "bridge_dead_letters",
    ]
    snapshot = {table: query(database_url, f"select * from {table} order by 1") for table in tables}
    second = await replay(repository, recording)
    assert {table: query(database_url, f"select * from {table} order by 1") for table in tables} == snapshot
    assert second.rows_written[Table.OPTIONS_FLOW] == 0
    assert second.rows_written[Table.DEAD_LETTERS] == 0


async def test_malformed_frames_are_dead_lettered_while_good_ones_land(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    good = good_frames()
    trade = {
        "event_ts": "2026-11-20T14:29:59Z",
        "option_symbol": "QQQ251219C00500000",
        "size": 2,
        "trade_price": 3.0,
    }
    bad = [
        console_frame(10, "{not json"),
        console_frame(11, {"type": "quotes", "data": {}}),
        console_frame(12, {"type": "options_flow", "data": {k: v for k, v in trade.items() if k != "event_ts"}}),
        console_frame(13, {"type": "options_flow", "data": {**trade, "side": "sideways"}}),
        # in one frame: a good trade beside a message whose option_type violates the check
        console_frame(
            14,
            [
                {"type": "options_flow", "data": trade},
                {"type": "options_flow", "data": {**trade, "option_type": "straddle"}},
            ],
        ),
    ]
    interleaved = [frame for pair in zip(good, bad, strict=True) for frame in pair]
    await replay(repository, write_recording(tmp_path / "mixed.jsonl", interleaved))

    letters = query(database_url, "select feed, reason, frame from bridge_dead_letters order by received_at")
    assert [(feed, frame) for feed, _, frame in letters] == [("console", frame.text) for frame in bad]
    reasons = [reason for _, reason, _ in letters]
    assert reasons[0].startswith("invalid JSON")
    assert "unknown type 'quotes'" in reasons[1]
    assert "event_ts: expected a timestamp, got null" in reasons[2]
    assert "side: 'sideways' is not one of buy, sell, unknown" in reasons[3]
    assert reasons[4].startswith("message 1: options_flow: option_type: 'straddle'")
    assert query(database_url, "select count(*) from options_flow") == [(3,)]
    assert query(database_url, "select count(*) from broker_balances") == [(1,)]


async def test_a_row_the_database_refuses_is_dead_lettered_and_its_batch_lands(
    database_url: str, repository: PostgresRepository
) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("alter table options_flow add constraint test_small_trades check (size < 1000)")
    frames = [
        console_frame(
            n,
            {
                "type": "options_flow",
                "data": {
                    "event_ts": 1795185000000 + n,
                    "option_symbol": "IWM251219C00250000",
                    "trade_price": 1.0,
                    "size": 5000 if n == 3 else 1,
                },
            },
        )
        for n in range(8)
    ]

    class Frames:
        name, finite = "frames", True

        async def run(self, sink: Any) -> None:
            for frame in frames:
                await sink.emit(frame)

    stats = PipelineStats()
    assert await run_bridge([Frames()], repository, normalizers(), CONFIG, stats, utc_now, never)
    assert query(database_url, "select count(*) from options_flow") == [(7,)]
    ((reason, frame),) = query(database_url, "select reason, frame from bridge_dead_letters")
    assert "test_small_trades" in reason
    assert '"size":"5000"' in frame


async def stream_console(repository: PostgresRepository, **simulator: Any) -> tuple[SentLog, PipelineStats]:
    """Run the console feed against the simulator until every message it sends has been received."""
    sent = SentLog()
    stats = PipelineStats()
    total = simulator["total_messages"]
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(
                serve_console_simulator, token="t0ken-abc", messages_per_second=None, log=sent, **simulator
            )
        )
        feed = ConsoleFeed(url=url, token="t0ken-abc", clock=utc_now, max_silence_s=5)
        everything_received = stop_when(lambda: sent.messages_sent >= total and stats.total_frames >= sent.frames_sent)
        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, everything_received)
        nursery.cancel_scope.cancel()
    assert sent.messages_sent == total
    return sent, stats


async def test_a_live_console_stream_lands_every_message(database_url: str, repository: PostgresRepository) -> None:
    sent, _ = await stream_console(repository, batch_size=40, total_messages=3000)
    stored = dict(
        query(
            database_url,
            "select 'options_flow', count(*) from options_flow union all "
            "select 'news_events', count(*) from news_events",
        )
    )
    assert stored["options_flow"] == sent.messages_by_table["options_flow"]
    assert stored["news_events"] == sent.messages_by_table["news_events"]
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_a_feed_killed_mid_stream_reconnects_and_loses_nothing(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats = await stream_console(repository, batch_size=25, total_messages=2000, disconnect_every_frames=7)
    assert stats.feed_restarts["console"] >= 10
    assert query(database_url, "select count(*) from options_flow") == [(sent.messages_by_table["options_flow"],)]
    duplicates = query(database_url, "select count(*) - count(distinct id) from options_flow")
    assert duplicates == [(0,)]


async def test_a_wrong_token_is_reported_and_not_retried_in_a_hot_loop(
    repository: PostgresRepository,
) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_console_simulator, token="right-token"))
        feed = ConsoleFeed(url=url, token="wrong-token", clock=utc_now)

        async def stop_after_a_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, stop_after_a_second)
        nursery.cancel_scope.cancel()
    assert "refused the credentials (HTTP 401)" in stats.feed_last_error["console"]
    assert stats.feed_restarts["console"] == 1  # then it waits minutes, not milliseconds


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path) as writer:
        for frame in good_frames():
            writer(frame)
    return path


def test_recordings_keep_the_exact_frame_text(recorded: Path) -> None:
    lines = recorded.read_bytes().splitlines()
    first = orjson.loads(lines[0])
    assert set(first) == {"at", "feed", "frame"}
    assert first["at"] == "2026-11-20T14:30:00.000000Z"
    assert first["frame"] == good_frames()[0].text
