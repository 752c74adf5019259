"""Trade side inferred from the NBBO known before the trade (the contract's rule)."""

from __future__ import annotations

from decimal import Decimal

from bridge.domain.models import Side


def usable_quote(bid: Decimal | None, ask: Decimal | None) -> bool:
    """A two-sided, uncrossed quote with a positive ask (a zero bid is normal for cheap options)."""
    return bid is not None and ask is not None and ask > 0 and 0 <= bid <= ask


def infer_side(price: Decimal, bid: Decimal | None, ask: Decimal | None) -> Side:
    """price >= ask: buy; price <= bid: sell; strictly between: above mid buy, below sell, at mid unknown.

    No usable quote (missing, crossed, no ask): ``unknown``.
    """
    if bid is None or ask is None or not usable_quote(bid, ask):
        return "unknown"
    return side_within(price, bid, ask)


def side_within(price: Decimal, bid: Decimal, ask: Decimal) -> Side:
    """``infer_side`` for a quote already known to be usable (the firehose checks that once, when it
    looks the quote up, rather than once more per trade)."""
    if price >= ask:
        return "buy"
    if price <= bid:
        return "sell"
    mid = (bid + ask) / 2
    if price > mid:
        return "buy"
    if price < mid:
        return "sell"
    return "unknown"
