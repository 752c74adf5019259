"""Normalization throughput, in one process, no I/O: Developer Console messages or Polygon trades.

    python bench/bench_normalize.py [--protocol console|polygon] [--messages 200000] [--batch 50]

Builds frames like the simulators' (console: arrays of trades; polygon: the simulator's mix of
quotes and trades, ``--messages`` counting trades), then times the normalizer over them.
Reports frames/s and rows/s on one core.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import orjson

from bridge.adapters.simulator.polygon import PolygonScenario
from bridge.domain.models import ReceivedFrame
from bridge.domain.normalizers.console import normalize_console
from bridge.domain.normalizers.polygon import PolygonNormalizer


def make_frames(messages: int, batch: int) -> list[ReceivedFrame]:
    start = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    frames = []
    for first in range(0, messages, batch):
        payload = []
        for n in range(first, min(first + batch, messages)):
            payload.append(
                {
                    "type": "options_flow",
                    "data": {
                        "event_ts": (start + timedelta(milliseconds=n)).isoformat(),
                        "option_symbol": f"SPY251219{'C' if n % 2 else 'P'}00{600 + n % 50:03d}000",
                        "size": 1 + n % 20,
                        "trade_price": 2.35,
                        "bid": 2.30,
                        "ask": 2.40,
                        "venue": "CBOE",
                        "sequence": n,
                    },
                }
            )
        frames.append(ReceivedFrame("console", start, orjson.dumps(payload).decode()))
    return frames


def make_polygon_frames(trades: int, batch: int) -> list[ReceivedFrame]:
    start = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    scenario = PolygonScenario(seed=1, contracts=2000, start=start).events()
    frames, events, count = [], [], 0
    while count < trades:
        event = next(scenario)
        events.append(event)
        count += event["ev"] == "T"
        if len(events) == batch:
            frames.append(ReceivedFrame("polygon", start, orjson.dumps(events).decode()))
            events = []
    if events:
        frames.append(ReceivedFrame("polygon", start, orjson.dumps(events).decode()))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--protocol", choices=["console", "polygon"], default="console")
    args = parser.parse_args()
    if args.protocol == "console":
        frames, normalize = make_frames(args.messages, args.batch), normalize_console
    else:
        frames, normalize = make_polygon_frames(args.messages, args.batch), PolygonNormalizer()
    started = time.perf_counter()
    rows = sum(len(normalize(frame).rows) for frame in frames)
    elapsed = time.perf_counter() - started
    assert rows == args.messages
    print(
        f"{args.protocol}: normalized {len(frames):,} frames / {rows:,} rows in {elapsed:.2f}s: "
        f"{len(frames) / elapsed:,.0f} frames/s, {rows / elapsed:,.0f} rows/s (one core)"
    )


if __name__ == "__main__":
    main()
