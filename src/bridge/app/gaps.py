"""The gap ledger: every interval in which a feed was not receiving, on record.

A feed's gap opens when it stops receiving — its connection failed or stalled, the journal is full, the
bridge is shutting down, its lease went to another replica — and closes when it receives again. Each event
is journaled (``bridge.domain.gaps``) and so lands in ``bridge_feed_gaps`` like any row, whatever the
database is doing. Open gaps are also kept in a small file beside the journal, so a gap that spans a restart
is one row, closed by the next start; a process that died without a shutdown leaves no such entry, and the
next start opens its gap from the last frame the journal holds for that feed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import attrs
import orjson
import trio

from bridge.adapters.journal import Journal
from bridge.app.stats import PipelineStats
from bridge.domain.gaps import GAPS_FEED, encode_gap, gap_id
from bridge.domain.models import FeedGapRow, ReceivedFrame
from bridge.domain.ports import Clock
from bridge.logs import get_logger

log = get_logger(__name__, component="gaps")

OPEN_GAPS_FILE: Final = "open-gaps.json"
CRASHED: Final = "the bridge stopped without a shutdown (killed or crashed)"


@attrs.frozen
class FeedGap:
    id: uuid.UUID
    feed: str
    started_at: datetime
    ended_at: datetime | None
    reason: str


GapClosed = Callable[[FeedGap], None]


@attrs.define
class GapTracker:
    journal: Journal
    stats: PipelineStats
    clock: Clock
    instance_id: str | None = None
    _open: dict[str, FeedGapRow] = attrs.Factory(dict)
    _callbacks: list[GapClosed] = attrs.Factory(list)

    @property
    def _state(self) -> Path | None:
        return self.journal.config.directory / OPEN_GAPS_FILE if self.journal.config.directory else None

    def load(self) -> None:
        """At start: the gaps the last run left open, and one for each feed whose last run ended without a shutdown."""
        state = self._state
        if state is None:
            return
        try:
            saved = orjson.loads(state.read_bytes())
        except FileNotFoundError:
            saved = {}
        except (ValueError, orjson.JSONDecodeError):
            log.error("the open-gaps file is damaged; gaps open at the last stop are taken as crashes", path=str(state))
            saved = {}
        for feed, gap in saved.items() if isinstance(saved, dict) else ():
            try:
                self._open[feed] = FeedGapRow(
                    id=uuid.UUID(gap["id"]), feed=feed,
                    started_at=datetime.fromisoformat(gap["started_at"]), reason=gap["reason"],
                    instance_id=gap.get("instance_id"),
                )  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
        for feed, feed_log in list(self.journal.logs.items()):
            if feed == GAPS_FEED or feed in self._open or not feed_log.segments:
                continue
            last_at = feed_log.segments[-1].last_at
            if last_at is not None:
                self._start(feed, CRASHED, last_at)
        self._save()

    def on_closed(self, callback: GapClosed) -> None:
        """``callback(gap)`` runs (on the event loop) each time a gap closes: backfill starts from it."""
        self._callbacks.append(callback)

    def open_gaps(self) -> dict[str, FeedGap]:
        return {feed: _public(row) for feed, row in self._open.items()}

    def stopped(self, feed: str, reason: str) -> None:
        """``feed`` stopped receiving (a gap opens, unless one is already open)."""
        if feed not in self._open:
            self._start(feed, reason, self.clock())
            self._save()

    def receiving(self, feed: str) -> None:
        """``feed`` receives again: its open gap, if any, closes."""
        row = self._open.pop(feed, None)
        if row is None:
            return
        ended = max(self.clock(), row.started_at)
        closed = attrs.evolve(row, ended_at=ended)
        blind = (ended - row.started_at).total_seconds()
        self.stats.blind_seconds[feed] += blind
        self._emit(closed)
        self._save()
        log.info("feed receiving again", feed=feed, blind_s=round(blind, 3), reason=row.reason)
        for callback in self._callbacks:
            try:
                callback(_public(closed))
            except Exception:  # a backfill that cannot start must not stop the feed
                log.exception("a gap callback failed", feed=feed)

    async def record_backfill(self, gap: uuid.UUID, feed: str, status: str, rows: int, detail: str | None) -> None:
        """What backfill did for a gap: rows written and ``done`` / ``partial`` / ``unavailable`` with why."""
        known = next((row for row in self._open.values() if row.id == gap), None)
        started = known.started_at if known else self.clock()
        row = FeedGapRow(id=gap, feed=feed, started_at=started, reason=known.reason if known else "backfill",
                         backfill_status=status, backfill_rows=rows, backfill_detail=detail)  # fmt: skip
        self._emit(row)
        await trio.lowlevel.checkpoint()

    def _start(self, feed: str, reason: str, at: datetime) -> None:
        row = FeedGapRow(id=gap_id(feed, at, self.instance_id), feed=feed, started_at=at, reason=reason,
                         instance_id=self.instance_id)  # fmt: skip
        self._open[feed] = row
        self._emit(row)
        log.warning("feed not receiving", feed=feed, reason=reason)

    def _emit(self, row: FeedGapRow) -> None:
        self.journal.append_nowait(ReceivedFrame(GAPS_FEED, self.clock(), encode_gap(row)))

    def _save(self) -> None:
        state = self._state
        if state is None:
            return
        body = {feed: {"id": str(row.id), "started_at": row.started_at.isoformat(), "reason": row.reason,
                       "instance_id": row.instance_id} for feed, row in self._open.items()}  # fmt: skip
        temporary = state.with_suffix(".tmp")
        try:
            temporary.write_bytes(orjson.dumps(body))
            os.replace(temporary, state)
        except OSError as exc:  # a full disk: the journal pauses the feeds anyway; the gap rows are journaled
            log.warning("could not save the open gaps", error=str(exc))


def _public(row: FeedGapRow) -> FeedGap:
    return FeedGap(row.id, row.feed, row.started_at, row.ended_at, row.reason)
