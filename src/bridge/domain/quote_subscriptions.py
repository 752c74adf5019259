"""Which contracts a Polygon connection streams quotes for, within the vendor's per-connection limit.

Configured contracts are always subscribed. Others are added when they trade, and when the limit is
reached the least recently traded one is dropped to make room. ``on_trades`` returns what to
subscribe and unsubscribe, so the feed sends one message of each per frame at most.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import attrs


@attrs.define
class QuoteSubscriptions:
    limit: int = 1000
    pinned: frozenset[str] = frozenset()
    _traded: OrderedDict[str, None] = attrs.field(factory=OrderedDict, init=False)

    def __attrs_post_init__(self) -> None:
        if len(self.pinned) > self.limit:
            raise ValueError(f"{len(self.pinned)} configured quote contracts exceed the limit of {self.limit}")

    @property
    def current(self) -> list[str]:
        """Every contract to stream quotes for now (pinned first)."""
        return sorted(self.pinned) + list(self._traded)

    def on_trades(self, contracts: Iterable[str]) -> tuple[list[str], list[str]]:
        """Note trades; return (contracts to subscribe, contracts to unsubscribe)."""
        added: list[str] = []
        dropped: list[str] = []
        room = self.limit - len(self.pinned)
        for contract in contracts:
            if contract in self.pinned:
                continue
            if contract in self._traded:
                self._traded.move_to_end(contract)
                continue
            if room <= 0:
                continue
            self._traded[contract] = None
            added.append(contract)
            if len(self._traded) > room:
                evicted, _ = self._traded.popitem(last=False)
                if evicted in added:
                    added.remove(evicted)
                else:
                    dropped.append(evicted)
        return added, dropped
