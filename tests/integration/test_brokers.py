"""Broker state in PostgreSQL from snapshot and delta sequences (tastytrade stream, Tradier snapshots)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.recording import RecordingWriter
from bridge.adapters.replay import ReplayFeed
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame
from tests.integration.helpers import never, query
from tests.integration.test_pipeline_postgres import CONFIG

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def tasty_position(symbol: str, qty: int, seconds: float, direction: str = "Long") -> dict[str, Any]:
    data = {"account-number": "5WT00001", "symbol": symbol, "quantity": str(qty), "quantity-direction": direction,
            "updated-at": at(seconds)}  # fmt: skip
    return {"type": "CurrentPosition", "data": data}


def tradier_snapshot(seconds: float, positions: list[dict[str, Any]], cash: float) -> dict[str, Any]:
    body: Any = "null" if not positions else {"position": positions[0] if len(positions) == 1 else positions}
    return {"type": "snapshot", "account": "VA000042", "as_of": at(seconds), "positions": {"positions": body},
            "balances": {"balances": {"total_cash": cash, "total_equity": cash * 2}}}  # fmt: skip


async def replay(repository: PostgresRepository, tmp_path: Path, frames: list[tuple[str, dict[str, Any]]]) -> None:
    path = tmp_path / "brokers.jsonl"
    with RecordingWriter(path) as writer:
        for n, (feed, message) in enumerate(frames):
            writer(ReceivedFrame(feed, T0 + timedelta(seconds=60 + n), orjson.dumps(message).decode()))
    assert await run_bridge([ReplayFeed([path])], repository, normalizers(), CONFIG, PipelineStats(), utc_now, never)


def positions(url: str) -> dict[tuple[str, str], float]:
    rows = query(url, "select a.broker, p.symbol, p.qty from broker_positions p"
                      " join broker_accounts a on a.id = p.broker_account_id")  # fmt: skip
    return {(broker, symbol): float(qty) for broker, symbol, qty in rows}


async def test_snapshots_deltas_out_of_order_updates_and_closes(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    await replay(repository, tmp_path, [
        ("tastytrade", tasty_position("SPY", 10, 1)),
        ("tastytrade", tasty_position("QQQ", 5, 2, "Short")),
        ("tastytrade", tasty_position("SPY", 99, 0.5)),  # older than what is stored: ignored
        ("tastytrade", tasty_position("AAPL", 3, 3)),
        ("tastytrade", tasty_position("AAPL", 0, 4, "Zero")),  # closed
        ("tradier", tradier_snapshot(5, [{"symbol": "MSFT", "quantity": 2}, {"symbol": "TSLA", "quantity": 1}], 100)),
        ("tradier", tradier_snapshot(10, [{"symbol": "MSFT", "quantity": 3}], 150)),  # TSLA gone from the snapshot
        ("tradier", tradier_snapshot(7, [{"symbol": "NVDA", "quantity": 9}], 1)),  # a late, older snapshot: no effect
    ])  # fmt: skip
    # and a late older snapshot in a batch of its own (the usual case): still no effect
    await replay(repository, tmp_path, [("tradier", tradier_snapshot(8, [{"symbol": "TSLA", "quantity": 4}], 1))])
    assert positions(database_url) == {
        ("tastytrade", "SPY"): 10,
        ("tastytrade", "QQQ"): -5,
        ("tradier", "MSFT"): 3,
    }
    assert query(database_url, "select cash::int from broker_balances b join broker_accounts a"
                               " on a.id = b.broker_account_id where a.broker = 'tradier'") == [(150,)]  # fmt: skip
    accounts = query(database_url, "select broker, external_account_id from broker_accounts order by 1")
    assert accounts == [("tastytrade", "5WT00001"), ("tradier", "VA000042")]  # a new account appears on first sight


async def test_an_empty_snapshot_clears_the_account_and_replays_change_nothing(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    frames = [
        ("tradier", tradier_snapshot(1, [{"symbol": "MSFT", "quantity": 2}], 100)),
        ("tradier", tradier_snapshot(2, [], 100)),  # "null": no positions any more
    ]
    await replay(repository, tmp_path, frames)
    assert positions(database_url) == {}
    snapshot = query(database_url, "select * from broker_balances")
    await replay(repository, tmp_path, frames)
    assert query(database_url, "select * from broker_balances") == snapshot


def tasty_snapshot(seconds: float, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "snapshot", "account": "5WT00001", "as_of": at(seconds),
            "positions": {"data": {"items": items}}, "balances": {"data": {"cash-balance": "10"}}}  # fmt: skip


async def test_a_snapshot_with_a_position_held_for_years_applies_and_deletes_what_was_closed(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    held_long = {"symbol": "SPY", "quantity": "10", "quantity-direction": "Long",
                 "updated-at": (T0 - timedelta(days=800)).isoformat()}  # fmt: skip
    await replay(repository, tmp_path, [
        ("tastytrade", tasty_snapshot(1, [held_long, {"symbol": "QQQ", "quantity": "5"}])),
        ("tastytrade", tasty_snapshot(2, [held_long])),  # QQQ was closed meanwhile
    ])  # fmt: skip
    assert positions(database_url) == {("tastytrade", "SPY"): 10}
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_one_bad_entry_of_a_results_batch_costs_only_itself(
    tmp_path: Path, database_url: str, repository: PostgresRepository
) -> None:
    batch = {"results": [tasty_position("SPY", 3, 1)["data"] | {"quantity": "three"},
                         tasty_position("AAPL", 4, 1)]}  # fmt: skip
    batch["results"][0] = {"type": "CurrentPosition", "data": batch["results"][0]}
    await replay(repository, tmp_path, [("tastytrade", batch)])
    assert positions(database_url) == {("tastytrade", "AAPL"): 4}
    (reason,) = query(database_url, "select reason from bridge_dead_letters")
    assert reason == ("results 1: quantity: expected a number, got 'three'",)
