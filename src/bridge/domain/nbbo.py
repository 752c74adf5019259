"""The NBBO book: the latest quote per contract, in memory, bounded.

Updating and reading are O(1). Contracts are kept in order of their last quote, so the ones not
quoted for ``max_idle_ms`` (event time) are evicted from the front in amortized O(1), and the book
never holds more than ``max_contracts``.
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal

import attrs


@attrs.frozen
class Quote:
    bid: Decimal
    ask: Decimal
    at_ms: int


@attrs.define
class NbboBook:
    max_idle_ms: int = 15 * 60 * 1000
    max_contracts: int = 200_000
    _quotes: OrderedDict[str, Quote] = attrs.field(factory=OrderedDict, init=False)

    def update(self, contract: str, quote: Quote) -> None:
        current = self._quotes.get(contract)
        if current is not None and current.at_ms > quote.at_ms:
            return  # an older quote arriving late never replaces a newer one
        self._quotes[contract] = quote
        self._quotes.move_to_end(contract)
        self._evict(quote.at_ms)

    def usable(self, contract: str, at_ms: int, max_age_ms: int) -> Quote | None:
        """The latest quote for ``contract`` from at most ``max_age_ms`` before ``at_ms``, if any."""
        quote = self._quotes.get(contract)
        if quote is None or not 0 <= at_ms - quote.at_ms <= max_age_ms:
            return None
        return quote

    def __len__(self) -> int:
        return len(self._quotes)

    def _evict(self, now_ms: int) -> None:
        quotes = self._quotes
        while quotes:
            oldest = next(iter(quotes.values()))
            if len(quotes) <= self.max_contracts and now_ms - oldest.at_ms <= self.max_idle_ms:
                return
            quotes.popitem(last=False)
