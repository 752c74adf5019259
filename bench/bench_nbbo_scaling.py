"""How the Polygon normalizer's cost and memory grow with the number of contracts in the NBBO book.

    python bench/bench_nbbo_scaling.py [--contracts 1000,100000,1000000] [--trades 200000]
                                       [--max-idle-s 900]

For each size N, in a fresh process of its own, no I/O: the book is first filled with one quote for
each of N distinct contracts (the memory still held afterwards is measured with tracemalloc, and
the process's peak RSS is reported at the end), then frames of 200 events (60 % quotes, 40 %
trades, contracts drawn uniformly from the N) are normalized and timed, JSON decoding included.
The book's limit is 2 N, so that nothing is evicted (the book rotates a generation when half of
the limit was quoted since the last rotation); a last line shows the book bounded by
BRIDGE_NBBO_MAX_CONTRACTS: N = the largest size, limit = a tenth of it.

What it shows: the work per event is constant (a few dict lookups, no sweep, no reordering), but
the time per event still grows with N, because a book of 100,000 contracts or more no longer fits
in the CPU's caches, so each lookup waits on memory; and above 65,536 distinct traded contracts
the OCC-parse cache (sized for a day's active contracts) misses more often. Memory grows linearly
with N until the limit or the idle eviction caps it.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta

import orjson

from bridge.app.runtime import tune_garbage_collector
from bridge.domain.models import ReceivedFrame
from bridge.domain.nbbo import NbboBook
from bridge.domain.normalizers.polygon import PolygonNormalizer

ROOTS = ("SPY", "QQQ", "SPXW", "AAPL", "TSLA", "NVDA", "IWM", "AMZN", "META", "MSFT")


def ticker(index: int, first_expiration: date) -> str:
    """A distinct, valid OCC ticker for every index below 2,000,000 (10 roots x 50 weeks x 2 x 2,000 strikes)."""
    index, strike = divmod(index, 2000)
    index, kind = divmod(index, 2)
    root, week = divmod(index, 50)
    expiration = first_expiration + timedelta(weeks=week)
    return f"O:{ROOTS[root]}{expiration:%y%m%d}{'CP'[kind]}{(strike + 1) * 500:08d}"


def measure(contracts: int, trades: int, max_contracts: int, max_idle_s: float) -> str:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    expiration = now.date() + timedelta(days=7)
    tickers = [ticker(index, expiration) for index in range(contracts)]
    normalizer = PolygonNormalizer(book=NbboBook(max_idle_ms=int(max_idle_s * 1000), max_contracts=max_contracts))
    tracemalloc.start()
    for first in range(0, contracts, 200):
        events = [{"ev": "Q", "sym": sym, "bx": 302, "ax": 313, "bp": 1.25, "ap": 1.3, "bs": 5, "as": 5,
                   "t": now_ms, "q": 1} for sym in tickers[first : first + 200]]  # fmt: skip
        normalizer(ReceivedFrame("polygon", now, orjson.dumps(events).decode()))
    gc.collect()
    book_mb = tracemalloc.get_traced_memory()[0] / 2**20  # what the filled book (and its caches) still holds
    tracemalloc.stop()
    rng = random.Random(5)
    frames: list[ReceivedFrame] = []
    made = 0
    while made < trades:
        events = []
        for _ in range(200):
            sym = tickers[rng.randrange(contracts)]
            if rng.random() < 0.6:
                events.append({"ev": "Q", "sym": sym, "bx": 302, "ax": 313, "bp": 1.25, "ap": 1.3, "bs": 5,
                               "as": 5, "t": now_ms + 1, "q": 2})  # fmt: skip
            else:
                made += 1
                events.append({"ev": "T", "sym": sym, "x": 302, "p": 1.3, "s": 3, "c": [209], "t": now_ms + 2,
                               "q": made})  # fmt: skip
        frames.append(ReceivedFrame("polygon", now, orjson.dumps(events).decode()))
    started = time.perf_counter()
    stored = sum(len(normalizer(frame).rows) for frame in frames)
    elapsed = time.perf_counter() - started
    book, sample = normalizer.book, [tickers[rng.randrange(contracts)] for _ in range(200_000)]
    started = time.perf_counter()
    for sym in sample:
        book.update(sym, 1.25, 1.3, now_ms + 3)
        book.usable(sym, now_ms + 4, 5000)
    book_ns = 1e9 * (time.perf_counter() - started) / len(sample)
    assert stored == made, (stored, made)
    events_total = 200 * len(frames)
    return (
        f"{contracts:>9,} contracts (limit {max_contracts:>9,}): {made / elapsed:>8,.0f} trades/s,"
        f" {1e9 * elapsed / events_total:>5,.0f} ns/event (book update + lookup alone {book_ns:,.0f} ns);"
        f" book holds {len(normalizer.book):>9,},"
        f" {book_mb:>6.1f} MB ({1024 * 1024 * book_mb / max(len(normalizer.book), 1):,.0f} B/contract),"
        f" evicted {normalizer.book.evicted:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contracts", default="1000,100000,1000000")
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--max-idle-s", type=float, default=900)
    parser.add_argument("--one", nargs=2, type=int, metavar=("N", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one measurement, then this process's peak RSS
        tune_garbage_collector()
        line = measure(args.one[0], args.trades, args.one[1], args.max_idle_s)
        print(f"{line}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB", flush=True)
        return
    sizes = [int(value) for value in args.contracts.split(",")]
    # uncapped: room for twice the contracts (the book fills one generation at most half); capped: a tenth
    for size, limit in [(size, 2 * size) for size in sizes] + [(sizes[-1], max(sizes[-1] // 10, 1))]:
        subprocess.run([sys.executable, __file__, "--one", str(size), str(limit), "--trades", str(args.trades),
                        "--max-idle-s", str(args.max_idle_s)], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
