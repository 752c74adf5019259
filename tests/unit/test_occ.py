from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.domain.occ import InvalidOptionSymbol, OptionContract, parse_occ


def test_parses_a_plain_symbol() -> None:
    contract = parse_occ("SPY251219C00650000")
    assert contract == OptionContract("SPY", date(2025, 12, 19), "call", Decimal("650"))
    assert contract.underlying == "SPY"


def test_vendor_prefix_and_padding_are_accepted() -> None:
    assert parse_occ("O:AMC210827C00037000").strike == Decimal("37")
    assert parse_occ("SPY   251219P00650500").strike == Decimal("650.5")
    assert parse_occ("SPY   251219P00650500").option_type == "put"


@pytest.mark.parametrize(
    ("symbol", "underlying"),
    [
        ("SPXW251219C06000000", "SPX"),
        ("NDXP251219P20000000", "NDX"),
        ("RUTW251219C02000000", "RUT"),
        ("VIXW251217C00020000", "VIX"),
        ("AAPL251219C00200000", "AAPL"),
    ],
)
def test_weekly_and_pm_roots_map_to_their_index(symbol: str, underlying: str) -> None:
    assert parse_occ(symbol).underlying == underlying


def test_roots_with_digits_and_one_letter_roots() -> None:
    assert parse_occ("AMC1210827C00037000").root == "AMC1"
    assert parse_occ("F251219C00012500").root == "F"
    assert parse_occ("F251219C00012500").strike == Decimal("12.5")


@pytest.mark.parametrize(
    "bad",
    ["", "SPY", "SPY251219X00650000", "SPY251319C00650000", "TOOLONGX251219C00650000", "SPY251219C650000"],
)
def test_rejects_what_is_not_occ(bad: str) -> None:
    with pytest.raises(InvalidOptionSymbol):
        parse_occ(bad)


roots = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)


@given(
    root=roots,
    expiration=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
    option_type=st.sampled_from(["call", "put"]),
    strike_milli=st.integers(min_value=1, max_value=99_999_999),
)
def test_round_trips_any_contract(root: str, expiration: date, option_type: str, strike_milli: int) -> None:
    contract = OptionContract(root, expiration, option_type, Decimal(strike_milli) / 1000)  # type: ignore[arg-type]
    assert parse_occ(contract.occ_symbol) == contract
    assert parse_occ("O:" + contract.occ_symbol) == contract
