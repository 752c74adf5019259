"""Run each feed only while this replica holds its lease, so two replicas never read one stream at once.

The store (``bridge.adapters.postgres.leases``) decides expiry on the database's clock; this side keeps a
*local* deadline on trio's monotonic clock: the time at which the last successful acquire or renew was
**sent**, plus the TTL, minus a safety margin. The database set ``expires_at`` from its ``now()``, which
was read after that send, so the local deadline always falls at least the margin before the lease
can expire, whatever the replicas' wall clocks say. The feed runs in a cancel scope whose deadline is
that local deadline, and its sink refuses to journal a frame once the deadline has passed: a process
frozen (SIGSTOP, a long GC pause, a stalled VM) and then resumed finds the deadline behind it, and no
frame it receives after that reaches the journal, even before the cancellation has been delivered.

Timing, for a TTL ``T``: renew every ``T/3``; local deadline ``T/4`` before expiry (so two renewals
may fail before the feed stops); a standby polls every ``T/5`` (at most 1 s); a replica's heartbeat row
lives ``T``. docs/leases.md has the protocol and the numbers.

Spread: each replica holds at most ``ceil(F / N)`` of the ``F`` feeds, ``N`` being the live replicas
(heartbeat rows); one holding more (a replica has just joined) hands its most recent lease over:
stop the feed, release the lease, and the others take it at their next poll.

The gap ledger: a feed stopped for a lease's reason opens a gap here (``lease handed over``,
``lease lost``); this replica closes it once it sees the lease held by another replica (within a poll of
the takeover), which is when the feed is received again, elsewhere. A gap left open by an earlier run of
this replica (a shutdown, a crash) for a feed another replica now runs closes the same way.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

import attrs
import trio

from bridge.adapters.postgres.leases import FEED_PREFIX, LeaseStoreUnavailable
from bridge.app.stats import PipelineStats
from bridge.logs import get_logger

log = get_logger(__name__, component="leases")

LEASE_HANDED_OVER: Final = "lease handed over"
LEASE_LOST: Final = "lease lost"
_FINISHED: Final = "finished"
_STORE_ERRORS: Final = (LeaseStoreUnavailable, trio.TooSlowError)


class LeaseStore(Protocol):
    """Leases by name; every operation is atomic in the store and judged by the store's clock."""

    async def acquire(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take ``name`` if nobody holds it: its new fencing number, or None if it is held."""
        ...

    async def renew(self, name: str, holder: str, fencing: int, ttl_s: float) -> bool:
        """Extend this tenure by ``ttl_s`` from now; False if it is over (expired, or taken)."""
        ...

    async def release(self, name: str, holder: str, fencing: int) -> None:
        """End this tenure now, so another replica can take the lease at once."""
        ...

    async def heartbeat(self, instance: str, ttl_s: float) -> int:
        """Say this replica is alive for ``ttl_s``; return how many replicas are, this one included."""
        ...

    async def leave(self, instance: str) -> None:
        """This replica is stopping: no longer count it."""
        ...

    async def holder(self, name: str) -> str | None:
        """Who holds ``name`` now, if anyone."""
        ...


class GapRecorder(Protocol):
    """The gap ledger (``bridge.app.gaps.GapTracker``)."""

    def stopped(self, feed: str, reason: str) -> None:
        """``feed`` stopped receiving: a gap opens."""
        ...

    def receiving(self, feed: str) -> None:
        """``feed`` is received again: its open gap, if any, closes."""
        ...

    def open_gaps(self) -> Mapping[str, object]:
        """The feeds with an open gap."""
        ...


@attrs.frozen
class LeaseTiming:
    ttl_s: float

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    @property
    def margin_s(self) -> float:
        """How long before the lease's expiry (at the latest) the holder stops reading."""
        return self.ttl_s / 4

    @property
    def poll_s(self) -> float:
        """How often a standby tries to take a lease, and a replica beats its heartbeat: ``T/5``, at most
        1 s, so a lease released on SIGTERM is taken within a second whatever the TTL."""
        return min(self.ttl_s / 5, 1.0)

    @property
    def settle_s(self) -> float:
        """How long after its first heartbeat a starting replica waits before it takes a lease."""
        return min(self.poll_s, 0.5)

    @property
    def call_timeout_s(self) -> float:
        return self.ttl_s / 4

    def deadline(self, sent_at: float) -> float:
        """The local deadline of a tenure acquired or renewed by a statement sent at ``sent_at``."""
        return sent_at + self.ttl_s - self.margin_s


@attrs.define(eq=False)
class Lease:
    """This replica's tenure of one feed's lease."""

    feed: str
    fencing: int
    deadline: float
    """trio (monotonic) time after which this replica must not read the feed."""
    acquired_at: float

    def valid(self) -> bool:
        """Whether the feed may still read: cheap, called for every frame."""
        return trio.current_time() < self.deadline


LeasedRun = Callable[[Lease], Awaitable[None]]
"""Runs one feed while the lease is held; cancelled when it is not. Returns only if the source is finite."""


@attrs.define
class LeaseCoordinator:
    """Takes, keeps, spreads and gives back this replica's feed leases."""

    store: LeaseStore
    instance: str
    feeds: Sequence[str]
    timing: LeaseTiming
    stats: PipelineStats
    gaps: GapRecorder | None = None
    live_instances: int = 1
    held: dict[str, Lease] = attrs.Factory(dict)
    _acquiring: trio.Lock = attrs.Factory(trio.Lock)
    _gap_open: set[str] = attrs.Factory(set)
    """Feeds this replica does not run whose gap it has open."""
    _settled: trio.Event = attrs.Factory(trio.Event)

    @property
    def limit(self) -> int:
        """The most leases this replica may hold: ``ceil(F / N)``."""
        return max(1, math.ceil(len(self.feeds) / max(1, self.live_instances)))

    # -- the heartbeat ------------------------------------------------------------------------------

    async def serve_heartbeat(self) -> None:
        """Beat every poll interval; on the way out, leave at once so the others recount without waiting."""
        try:
            while True:
                try:
                    with trio.fail_after(self.timing.call_timeout_s):
                        self.live_instances = await self.store.heartbeat(self.instance, self.timing.ttl_s)
                except _STORE_ERRORS as exc:
                    log.warning("lease heartbeat failed", error=str(exc) or type(exc).__name__)
                if not self._settled.is_set():
                    # replicas started together see each other before taking leases (no handover churn at
                    # start); short, because a lone replica's feeds are blind meanwhile
                    await trio.sleep(self.timing.settle_s)
                    self._settled.set()
                await trio.sleep(self.timing.poll_s)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.timing.call_timeout_s):
                try:
                    await self.store.leave(self.instance)
                except LeaseStoreUnavailable as exc:
                    log.warning("could not remove this replica's heartbeat", error=str(exc))

    # -- one feed -----------------------------------------------------------------------------------

    async def run_leased(self, feed: str, run: LeasedRun) -> None:
        """Forever: wait for ``feed``'s lease, run the feed while it is held, give the lease back."""
        self.stats.lease_held[feed] = False
        if self.gaps is not None and feed in self.gaps.open_gaps():
            self._gap_open.add(feed)
        while True:
            lease = await self._acquire(feed)
            self._gap_open.discard(feed)  # this replica runs it: the pipeline closes the gap once it receives
            outcome: str | None = None  # stays None if this replica is stopping (cancelled): not a lease's gap
            try:
                outcome = await self._hold(lease, run)
            finally:
                await self._give_back(lease, outcome)
            if outcome == _FINISHED:
                return

    async def _acquire(self, feed: str) -> Lease:
        await self._settled.wait()
        while True:
            # one attempt at a time, in turn (the lock is fair): the limit is checked with nothing in flight,
            # and no feed's attempts are starved by another's in step with them
            async with self._acquiring:
                if len(self.held) < self.limit:
                    try:
                        sent_at = trio.current_time()
                        with trio.fail_after(self.timing.call_timeout_s):
                            fencing = await self.store.acquire(FEED_PREFIX + feed, self.instance, self.timing.ttl_s)
                    except _STORE_ERRORS as exc:
                        log.debug("lease acquisition failed", feed=feed, error=str(exc) or type(exc).__name__)
                        fencing = None
                    if fencing is not None:
                        lease = Lease(feed, fencing, self.timing.deadline(sent_at), sent_at)
                        self.held[feed] = lease
                        self.stats.lease_held[feed] = True
                        log.info("lease acquired", feed=feed, fencing=fencing, instance=self.instance)
                        return lease
                    await self._close_gap_if_taken(feed, held_elsewhere=True)
                else:
                    await self._close_gap_if_taken(feed)
            await trio.sleep(self.timing.poll_s)

    async def _close_gap_if_taken(self, feed: str, *, held_elsewhere: bool = False) -> None:
        """A gap this replica has open for a feed another replica now holds ends: the feed is received there."""
        if feed not in self._gap_open or self.gaps is None:
            return
        if not held_elsewhere:
            try:
                with trio.fail_after(self.timing.call_timeout_s):
                    holder = await self.store.holder(FEED_PREFIX + feed)
            except _STORE_ERRORS:
                return
            held_elsewhere = holder is not None and holder != self.instance
        if held_elsewhere:
            self._gap_open.discard(feed)
            self.gaps.receiving(feed)

    async def _hold(self, lease: Lease, run: LeasedRun) -> str:
        """Run the feed until the lease ends (lost, handed over) or the feed finishes; say which."""
        outcome = LEASE_LOST  # what the local deadline passing means
        with trio.CancelScope(deadline=lease.deadline) as scope:
            async with trio.open_nursery() as nursery:

                async def keep() -> None:
                    nonlocal outcome
                    outcome = await self._keep(lease, scope)
                    scope.cancel()

                nursery.start_soon(keep)
                await run(lease)
                outcome = _FINISHED
                nursery.cancel_scope.cancel()
        return outcome

    async def _keep(self, lease: Lease, scope: trio.CancelScope) -> str:
        """Renew every ``T/3`` (retrying every poll while the store fails); return why the tenure ends."""
        due = lease.acquired_at + self.timing.renew_every_s
        while True:
            await trio.sleep_until(due)
            if self._hand_over(lease):
                return LEASE_HANDED_OVER
            sent_at = trio.current_time()
            try:
                with trio.fail_after(self.timing.call_timeout_s):
                    renewed = await self.store.renew(
                        FEED_PREFIX + lease.feed, self.instance, lease.fencing, self.timing.ttl_s
                    )
            except _STORE_ERRORS as exc:
                log.warning("lease renewal failed", feed=lease.feed, error=str(exc) or type(exc).__name__,
                            stops_in_s=round(lease.deadline - trio.current_time(), 3))  # fmt: skip
                due = trio.current_time() + self.timing.poll_s
                continue
            if not renewed:
                return LEASE_LOST
            lease.deadline = self.timing.deadline(sent_at)
            scope.deadline = lease.deadline  # the same instant: the sink's check and the cancellation agree
            due = sent_at + self.timing.renew_every_s

    def _hand_over(self, lease: Lease) -> bool:
        """Whether this lease is the one to give up: more held than the spread allows, and it is the newest."""
        if len(self.held) <= self.limit:
            return False
        return lease is max(self.held.values(), key=lambda held: (held.acquired_at, held.feed))

    async def _give_back(self, lease: Lease, outcome: str | None) -> None:
        """The feed has stopped reading: release the lease at once (also on shutdown), before any flush."""
        feed = lease.feed
        self.held.pop(feed, None)
        self.stats.lease_held[feed] = False
        if outcome in (LEASE_LOST, LEASE_HANDED_OVER):
            self.stats.feed_state.pop(feed, None)  # a feed this replica does not run is not its to report
            log.warning("feed stopped", feed=feed, reason=outcome, instance=self.instance)
            if self.gaps is not None:
                self.gaps.stopped(feed, outcome)
                self._gap_open.add(feed)
        with trio.CancelScope(shield=True), trio.move_on_after(self.timing.call_timeout_s):
            try:
                await self.store.release(FEED_PREFIX + feed, self.instance, lease.fencing)
            except LeaseStoreUnavailable as exc:
                log.warning("could not release the lease; it expires by itself", feed=feed, error=str(exc))
            else:
                log.info("lease released", feed=feed, fencing=lease.fencing)
