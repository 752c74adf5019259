"""What every broker normalizer shares: the snapshot frame and how it becomes rows.

Brokers stream changes but serve positions and balances as REST snapshots. A feed that fetches a
snapshot emits it as one frame of its own, ``{"type": "snapshot", "account": ID, "as_of": ISO,
"positions": <vendor body>, "balances": <vendor body>}``, so it is recorded and replayed like any
other frame; the vendor's normalizer parses the bodies and this module turns them into the account
row, the positions, a ``BrokerPositionsSnapshot`` (positions the snapshot no longer lists are
deleted) and the balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    BrokerPositionsSnapshot,
    Row,
)


def snapshot_rows(
    account: AccountRef, as_of: datetime, positions: Sequence[BrokerPositionRow], balance: BrokerBalanceRow | None
) -> tuple[Row, ...]:
    rows: list[Row] = [BrokerAccountRow(account)]
    rows += [position for position in positions if not position.closes_position]
    rows.append(BrokerPositionsSnapshot(account, as_of, tuple(p.symbol for p in positions if not p.closes_position)))
    if balance is not None:
        rows.append(balance)
    return tuple(rows)
