"""OCC option symbols: ``SPY251219C00650000`` = root, yymmdd expiration, C/P, strike x 1000 in 8 digits."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Final

import attrs

from bridge.domain.models import OptionType

_OCC: Final = re.compile(r"^(?P<root>[A-Z0-9.]{1,6}?)(?P<date>\d{6})(?P<cp>[CP])(?P<strike>\d{8})$")

#: Weekly and PM-settled roots whose underlying is the index they settle on.
INDEX_ROOTS: Final[dict[str, str]] = {
    "SPXW": "SPX",
    "SPXPM": "SPX",
    "NDXP": "NDX",
    "RUTW": "RUT",
    "VIXW": "VIX",
    "XSPW": "XSP",
    "DJXW": "DJX",
}

_VENDOR_PREFIXES: Final = ("O:",)


class InvalidOptionSymbol(ValueError):
    pass


@attrs.frozen
class OptionContract:
    root: str
    expiration: date
    option_type: OptionType
    strike: Decimal

    @property
    def underlying(self) -> str:
        return INDEX_ROOTS.get(self.root, self.root)

    @property
    def occ_symbol(self) -> str:
        """The unpadded OCC form the tables store."""
        strike_milli = int(self.strike * 1000)
        return f"{self.root}{self.expiration:%y%m%d}{'C' if self.option_type == 'call' else 'P'}{strike_milli:08d}"


def strip_vendor_prefix(symbol: str) -> str:
    for prefix in _VENDOR_PREFIXES:
        if symbol.startswith(prefix):
            return symbol[len(prefix) :]
    return symbol


def parse_occ(symbol: str) -> OptionContract:
    """Parse an OCC symbol, with or without vendor prefix (``O:``) or padding (``SPY   2512...``)."""
    compact = strip_vendor_prefix(symbol.strip()).replace(" ", "").upper()
    match = _OCC.match(compact)
    if match is None:
        raise InvalidOptionSymbol(f"{symbol!r} is not an OCC option symbol (ROOT + yymmdd + C/P + 8-digit strike)")
    yymmdd = match["date"]
    try:
        expiration = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError:
        raise InvalidOptionSymbol(f"{symbol!r} has an impossible expiration date {yymmdd}") from None
    return OptionContract(
        root=match["root"],
        expiration=expiration,
        option_type="call" if match["cp"] == "C" else "put",
        strike=Decimal(int(match["strike"])) / 1000,
    )
