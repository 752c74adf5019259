"""The NBBO book: the latest quote per contract, in memory, bounded.

Updating and reading are O(1). Contracts are kept in order of their last quote, so the ones not
quoted for ``max_idle_ms`` (event time) are evicted from the front, and the book never holds more
than ``max_contracts``. The eviction check itself is skipped until the oldest entry can have
expired, so a quote costs one dict lookup and one move in the common case.
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal

import attrs

Price = Decimal | float | int
"""A price as the vendor sent it: quotes outnumber trades, so only the quotes a trade uses become ``Decimal``."""


Quote = tuple[Price, Price, int]
"""A contract's best bid and offer at ``at_ms`` (exchange time, Unix ms): ``(bid, ask, at_ms)``.

A plain tuple rather than an attrs class or a ``NamedTuple``: the firehose stores one per quote
event, and a tuple is built several times faster while staying immutable and comparable.
"""


@attrs.define
class NbboBook:
    max_idle_ms: int = 15 * 60 * 1000
    max_contracts: int = 200_000
    _quotes: OrderedDict[str, Quote] = attrs.field(factory=OrderedDict, init=False)
    _check_at_ms: int = attrs.field(default=0, init=False)
    """No entry can be idle for longer than ``max_idle_ms`` before this event time."""
    evicted: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.max_idle_ms <= 0 or self.max_contracts <= 0:
            raise ValueError(f"max_idle_ms and max_contracts must be positive, got {self.max_idle_ms}, "
                             f"{self.max_contracts}")  # fmt: skip

    def update(self, contract: str, bid: Price, ask: Price, at_ms: int) -> None:
        """The contract's quote as of ``at_ms``; an older quote arriving late never replaces a newer one.

        Prices are kept as sent: there are more quotes than trades, so only the quotes a trade
        uses are converted to ``Decimal`` (by the normalizer).
        """
        quotes = self._quotes
        current = quotes.get(contract)
        if current is not None:
            if current[2] > at_ms:
                return
            quotes.move_to_end(contract)
        quotes[contract] = (bid, ask, at_ms)
        if at_ms >= self._check_at_ms or len(quotes) > self.max_contracts:
            self._evict(at_ms)

    def usable(self, contract: str, at_ms: int, max_age_ms: int) -> Quote | None:
        """The latest quote for ``contract`` from at most ``max_age_ms`` before ``at_ms``, if any."""
        stored = self._quotes.get(contract)
        if stored is None or not 0 <= at_ms - stored[2] <= max_age_ms:
            return None
        return stored

    def __len__(self) -> int:
        return len(self._quotes)

    def _evict(self, now_ms: int) -> None:
        quotes = self._quotes
        while quotes:
            oldest_ms = next(iter(quotes.values()))[2]
            if len(quotes) <= self.max_contracts and now_ms - oldest_ms <= self.max_idle_ms:
                self._check_at_ms = oldest_ms + self.max_idle_ms + 1
                return
            quotes.popitem(last=False)
            self.evicted += 1
