"""Process-wide settings of the Python runtime for a long-running, allocation-heavy service."""

from __future__ import annotations

import gc
from typing import Final

YOUNG_GENERATION_THRESHOLD: Final = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def tune_garbage_collector(young_threshold: int = YOUNG_GENERATION_THRESHOLD) -> None:
    """Collect less often, and never rescan what startup left behind.

    Every trade allocates a row, its raw event and a few values, and thousands live at once in
    batches and channels; with the default thresholds the cycle collector rescans them again and
    again (measured: normalization 55k → 67k trades/s per core with 5,000-row batches alive, see
    ``bench/README.md``). The bridge makes few reference cycles, so collecting young objects every
    50,000 allocations costs little memory, and ``gc.freeze`` moves the modules, settings and
    caches built at startup out of every later collection. Call once, when startup is done.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
