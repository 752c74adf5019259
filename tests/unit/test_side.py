from decimal import Decimal as D

import pytest

from bridge.domain.side import infer_side


@pytest.mark.parametrize(
    ("price", "bid", "ask", "side"),
    [
        ("1.10", "1.00", "1.10", "buy"),  # at the ask
        ("1.20", "1.00", "1.10", "buy"),  # through the ask
        ("1.00", "1.00", "1.10", "sell"),  # at the bid
        ("0.90", "1.00", "1.10", "sell"),  # through the bid
        ("1.06", "1.00", "1.10", "buy"),  # inside, above the midpoint
        ("1.04", "1.00", "1.10", "sell"),  # inside, below the midpoint
        ("1.05", "1.00", "1.10", "unknown"),  # at the midpoint
        ("1.05", "1.10", "1.00", "unknown"),  # crossed quote
        ("1.00", "1.00", "1.00", "buy"),  # locked quote: at the ask first
        ("0.05", "0", "0.05", "buy"),  # no bid (normal for cheap options): at the ask
        ("0.01", "0", "0.05", "sell"),  # below the midpoint of a zero-bid quote
        ("1.05", "1.00", "0", "unknown"),  # no ask: no usable quote
    ],
)
def test_side_rule_at_every_boundary(price: str, bid: str, ask: str, side: str) -> None:
    assert infer_side(D(price), D(bid), D(ask)) == side


def test_no_quote_is_unknown() -> None:
    assert infer_side(D("1"), None, None) == "unknown"
    assert infer_side(D("1"), D("0.9"), None) == "unknown"
