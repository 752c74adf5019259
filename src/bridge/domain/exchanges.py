"""Options exchange ids as Polygon/Massive sends them (``x``, ``bx``, ``ax``), to MIC codes.

Transcribed from the vendor's reference endpoint ``/v3/reference/exchanges?asset_class=options``;
ids the table does not know are stored as the id itself, so nothing is lost when an exchange is
added. Refresh the table from that endpoint when a new venue launches.
"""

from __future__ import annotations

from typing import Final

#: id -> (MIC, name)
OPTIONS_EXCHANGES: Final[dict[int, tuple[str, str]]] = {
    300: ("AMXO", "NYSE American Options"),
    301: ("XBOX", "BOX Options Exchange"),
    302: ("XCBO", "Cboe Options Exchange"),
    303: ("EMLD", "MIAX Emerald"),
    304: ("EDGO", "Cboe EDGX Options"),
    307: ("GMNI", "Nasdaq GEMX"),
    308: ("XISX", "Nasdaq ISE"),
    309: ("MCRY", "Nasdaq MRX"),
    312: ("XMIO", "MIAX Options"),
    313: ("ARCO", "NYSE Arca Options"),
    314: ("OPRA", "Options Price Reporting Authority"),
    315: ("MPRL", "MIAX Pearl"),
    316: ("XNDQ", "Nasdaq Options Market"),
    319: ("XBXO", "Nasdaq BX Options"),
    322: ("C2OX", "Cboe C2 Options"),
    323: ("XPHL", "Nasdaq PHLX"),
    325: ("BATO", "Cboe BZX Options"),
    336: ("MXOP", "MEMX Options"),
}


def venue(exchange_id: int) -> str:
    """The exchange's MIC, or its id as text when the table does not know it."""
    known = OPTIONS_EXCHANGES.get(exchange_id)
    return known[0] if known is not None else str(exchange_id)
