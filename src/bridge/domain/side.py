"""Trade side inferred from the NBBO known before the trade (the contract's rule)."""

from __future__ import annotations

from decimal import Decimal

from bridge.domain.models import Side


def infer_side(price: Decimal, bid: Decimal | None, ask: Decimal | None) -> Side:
    """price >= ask: buy; price <= bid: sell; strictly between: above mid buy, below sell, at mid unknown.

    A missing, zero-width-negative (crossed) or non-positive quote is no usable quote: ``unknown``.
    """
    if bid is None or ask is None or bid <= 0 or ask <= 0 or bid > ask:
        return "unknown"
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
