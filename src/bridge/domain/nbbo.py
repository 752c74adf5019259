"""The NBBO book: the latest quote per contract, in memory, bounded.

Two generations of plain dicts, ``current`` and ``previous``: a quote is stored in ``current``
(leaving ``previous`` if the contract was there), and a lookup tries ``current``, then
``previous``. When event time has moved on by half of ``max_idle_ms``, or when ``current`` holds
half of ``max_contracts``, the generations rotate: ``previous`` is dropped with every contract
not quoted since the last rotation, ``current`` becomes ``previous``, and a new, empty
``current`` begins. Every operation is a few dict lookups, whatever the size of the book.

So a contract quoted within the last half of ``max_idle_ms`` is always in the book (unless the
limit forces a rotation sooner), one not quoted for about ``max_idle_ms`` is gone, and the book
never holds more than ``max_contracts``. A contract that lingers is never used: a trade takes
only a quote at most ``quote_max_age_ms`` older than itself.

Why not an ordered dict with ``move_to_end`` on every quote, evicting from the front: once the
book outgrew the CPU's caches (100,000 contracts and more), that cost two to three times as much
per quote as a plain dict (measured in ``bench/``).
"""

from __future__ import annotations

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
    _current: dict[str, Quote] = attrs.field(factory=dict, init=False)
    _previous: dict[str, Quote] = attrs.field(factory=dict, init=False)
    _rotate_at_ms: int = attrs.field(default=0, init=False)
    """Event time at which the generations rotate next."""
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
        if at_ms >= self._rotate_at_ms:
            self._rotate(at_ms)
        current = self._current
        stored = current.get(contract)
        if stored is None:
            stored = self._previous.pop(contract, None)
            if stored is not None and stored[2] > at_ms:
                self._previous[contract] = stored  # the newer quote stays where it was
                return
            # room in the current generation (and, for a contract new to the book, within the limit)
            generation = (self.max_contracts + 1) // 2
            while len(current) >= generation or (
                stored is None and len(current) + len(self._previous) >= self.max_contracts
            ):
                self._rotate(at_ms)
                current = self._current
        elif stored[2] > at_ms:
            return
        current[contract] = (bid, ask, at_ms)

    def usable(self, contract: str, at_ms: int, max_age_ms: int) -> Quote | None:
        """The latest quote for ``contract`` from at most ``max_age_ms`` before ``at_ms``, if any."""
        stored = self._current.get(contract)
        if stored is None:
            stored = self._previous.get(contract)
        if stored is None or not 0 <= at_ms - stored[2] <= max_age_ms:
            return None
        return stored

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def _rotate(self, now_ms: int) -> None:
        self.evicted += len(self._previous)
        self._previous, self._current = self._current, {}
        self._rotate_at_ms = max(self._rotate_at_ms, now_ms + max(1, self.max_idle_ms // 2))
