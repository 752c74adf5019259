"""End-to-end throughput of the pipeline: simulator → feed → normalizer → writers → PostgreSQL.

    python bench/bench_pipeline.py [--protocol console|polygon] [--messages 200000] [--batch 100]
                                   [--database-url URL]

Everything runs on this machine: the simulated Developer Console or Polygon server (``--messages``
counts trades there, quotes come on top) sends as fast as it can over loopback,
the bridge (in this process, as in `bridge run`) ingests into the embedded PostgreSQL (or --database-url,
migrated first) and the run ends with a reconciliation of sent against stored.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import trio

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.feeds.console import ConsoleFeed
from bridge.adapters.feeds.polygon import PolygonFeed
from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.adapters.simulator.polygon import serve_polygon_simulator
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import Table
from bridge.domain.policies import BatchPolicy
from bridge.domain.ports import Feed


async def ingest(
    repository: PostgresRepository, protocol: str, messages: int, batch: int, stats: PipelineStats
) -> SentLog:
    sent = SentLog()
    async with trio.open_nursery() as nursery:
        feed: Feed
        if protocol == "console":
            url = await nursery.start(functools.partial(
                serve_console_simulator, token="bench", messages_per_second=None, batch_size=batch,
                total_messages=messages, log=sent))  # fmt: skip
            feed = ConsoleFeed(url=url, token="bench", clock=utc_now)
        else:
            url = await nursery.start(functools.partial(
                serve_polygon_simulator, api_key="bench", events_per_second=None, batch_size=batch,
                total_trades=messages, log=sent))  # fmt: skip
            feed = PolygonFeed(url=url, api_key="bench", clock=utc_now)
        until_everything_is_committed = stop_when(
            lambda: sent.messages_sent >= messages and sum(stats.rows_committed.values()) >= messages
        )
        config = PipelineConfig(batching=BatchPolicy(max_rows=5000, max_ms=200))
        await run_bridge([feed], repository, normalizers(), config, stats, utc_now, until_everything_is_committed)
        nursery.cancel_scope.cancel()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="messages per WebSocket frame")
    parser.add_argument("--database-url")
    parser.add_argument("--protocol", choices=["console", "polygon"], default="console")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        if args.database_url:
            run(args.database_url, args)
        else:
            with open_embedded_postgres(Path(home)) as url:
                run(url, args)


def run(url: str, args: argparse.Namespace) -> None:
    migrate(url)
    with open_repository(url) as repository:
        before = repository.count_rows()
        stats = PipelineStats()
        started = time.perf_counter()
        sent = trio.run(ingest, repository, args.protocol, args.messages, args.batch, stats)
        elapsed = time.perf_counter() - started
        after = repository.count_rows()
    stored = {table: after[table] - before[table] for table in (Table.OPTIONS_FLOW, Table.NEWS_EVENTS)}
    print(
        f"{args.protocol}: {sent.messages_sent:,} rows sent in {sent.frames_sent:,} frames, "
        f"end to end in {elapsed:.1f}s: "
        f"{sent.messages_sent / elapsed:,.0f} rows/s, {stats.total_frames / elapsed:,.0f} frames/s"
    )
    for table, count in stored.items():
        status = "ok" if count == sent.messages_by_table[table] else "MISMATCH"
        print(f"  {table}: sent {sent.messages_by_table[table]:,}, stored {count:,} ({status})")


if __name__ == "__main__":
    main()
