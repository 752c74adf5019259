"""Normalization throughput of the Developer Console format, in one process, no I/O.

    python bench/bench_normalize.py [--messages 200000] [--batch 50]

Builds console frames like the simulator's (arrays of mixed messages), then times
``normalize_console`` over them. Reports frames/s and messages/s on one core.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import orjson

from bridge.domain.models import ReceivedFrame
from bridge.domain.normalizers.console import normalize_console


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    frames = make_frames(args.messages, args.batch)
    started = time.perf_counter()
    rows = sum(len(normalize_console(frame).rows) for frame in frames)
    elapsed = time.perf_counter() - started
    assert rows == args.messages
    print(
        f"normalized {len(frames):,} frames / {rows:,} messages in {elapsed:.2f}s: "
        f"{len(frames) / elapsed:,.0f} frames/s, {rows / elapsed:,.0f} messages/s (one core)"
    )


if __name__ == "__main__":
    main()
