"""The gap ledger's records as journal frames, and back into ``FeedGapRow``s.

A gap event (opened, closed, backfilled) is journaled like a received frame, under the feed name
``GAPS_FEED``, and reaches ``bridge_feed_gaps`` through the same normalizer-and-writer path: so it is
durable from the moment it happens, survives a database outage and a restart, and a replay writes it
once (rows are merged by id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import orjson

from bridge.domain.frames import dead_letter, decode_json
from bridge.domain.models import FeedGapRow, Normalized, ReceivedFrame

GAPS_FEED: Final = "bridge.gaps"
_NAMESPACE: Final = uuid.UUID("6f1c0f4e-3b58-4a57-9f0b-5a1d6c2e9b11")
BACKFILL_STATUSES: Final = frozenset({"pending", "done", "partial", "unavailable", "not_applicable"})


def gap_id(feed: str, started_at: datetime, instance_id: str | None) -> uuid.UUID:
    """A gap's id: the same gap seen again (replayed from the journal) is the same row."""
    return uuid.uuid5(_NAMESPACE, f"{feed}\x1f{started_at.isoformat()}\x1f{instance_id or ''}")


def encode_gap(row: FeedGapRow) -> str:
    return orjson.dumps(
        {
            "gap": {
                "id": str(row.id),
                "feed": row.feed,
                "started_at": row.started_at.isoformat(),
                "ended_at": row.ended_at.isoformat() if row.ended_at else None,
                "reason": row.reason,
                "instance_id": row.instance_id,
                "backfill_status": row.backfill_status,
                "backfill_rows": row.backfill_rows,
                "backfill_detail": row.backfill_detail,
            }
        }
    ).decode()


def normalize_gap_frame(frame: ReceivedFrame) -> Normalized:
    """A journaled gap event into its row (a damaged one into a dead letter, as any frame)."""
    try:
        body = decode_json(frame)
        if not isinstance(body, dict) or not isinstance(gap := body.get("gap"), dict):
            raise ValueError("expected {\"gap\": {...}}")
        ended = gap.get("ended_at")
        status = gap.get("backfill_status")
        if status is not None and status not in BACKFILL_STATUSES:
            raise ValueError(f"unknown backfill_status {status!r}")
        rows = gap.get("backfill_rows")
        row = FeedGapRow(
            id=uuid.UUID(str(gap["id"])),
            feed=str(gap["feed"]),
            started_at=datetime.fromisoformat(str(gap["started_at"])),
            reason=str(gap["reason"]),
            ended_at=datetime.fromisoformat(ended) if isinstance(ended, str) else None,
            instance_id=gap.get("instance_id") if isinstance(gap.get("instance_id"), str) else None,
            backfill_status=status,
            backfill_rows=rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None,
            backfill_detail=gap.get("backfill_detail") if isinstance(gap.get("backfill_detail"), str) else None,
        )
    except Exception as exc:  # total, as every normalizer
        return Normalized(dead_letters=(dead_letter(frame, [f"invalid gap record: {exc}"], "invalid_gap"),))
    return Normalized(rows=(row,))
