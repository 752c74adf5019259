"""Feed leases on trio's virtual clock, against an in-memory store with the SQL statements' semantics.

Every frame a replica reads is checked against the store at that instant: the store must name that
replica as the lease's live holder. That is "never two holders at once", checked frame by frame, through
kills, freezes, a slow and a skewed database, outages and handovers.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from bridge.adapters.postgres.leases import FEED_PREFIX, INSTANCE_PREFIX, LeaseStoreUnavailable
from bridge.app.leases import LEASE_HANDED_OVER, LEASE_LOST, Lease, LeaseCoordinator, LeaseTiming
from bridge.app.stats import PipelineStats
from bridge.app.supervisor import AttemptSink, supervise_feed
from bridge.domain.models import ReceivedFrame
from bridge.domain.policies import BackoffPolicy
from tests.unit.fakes import T0

TTL = 3.0
TIMING = LeaseTiming(TTL)


@attrs.define
class Row:
    holder: str
    expires_at: float
    fencing: int


@attrs.define
class Database:
    """The lease table and its clock: ``now()`` is the virtual clock plus ``skew`` (the database's own)."""

    skew: float = 0.0
    rows: dict[str, Row] = attrs.Factory(dict)
    statements: Counter[str] = attrs.Factory(Counter)

    def now(self) -> float:
        return trio.current_time() + self.skew

    def holder(self, name: str) -> str | None:
        row = self.rows.get(name)
        return row.holder if row is not None and row.expires_at > self.now() else None


@attrs.define
class Replica:
    """One process's view of the database: it can be killed, frozen, cut off, or given a slow link."""

    db: Database
    name: str
    latency_s: float = 0.0
    """Each way: the statement reaches the database this long after it is sent, and the answer as long after."""
    down: bool = False
    killed: bool = False
    thawed: trio.Event = attrs.Factory(trio.Event)
    frozen: bool = False

    async def _reach(self) -> None:
        if self.killed:
            await trio.sleep_forever()
        if self.frozen:
            await self.thawed.wait()
        await trio.sleep(self.latency_s)
        if self.down:
            raise LeaseStoreUnavailable("OperationalError: connection refused")

    async def _call(self, statement: Callable[[], object]) -> object:
        await self._reach()
        result = statement()
        await trio.sleep(self.latency_s)
        if self.killed:
            await trio.sleep_forever()
        return result

    async def acquire(self, name: str, holder: str, ttl_s: float) -> int | None:
        def run() -> int | None:
            self.db.statements["acquire"] += 1
            row, now = self.db.rows.get(name), self.db.now()
            if row is None:
                self.db.rows[name] = Row(holder, now + ttl_s, 1)
                return 1
            if row.expires_at > now:
                return None
            self.db.rows[name] = Row(holder, now + ttl_s, row.fencing + 1)
            return row.fencing + 1

        return await self._call(run)  # type: ignore[return-value]

    async def renew(self, name: str, holder: str, fencing: int, ttl_s: float) -> bool:
        def run() -> bool:
            self.db.statements["renew"] += 1
            row, now = self.db.rows.get(name), self.db.now()
            if row is None or (row.holder, row.fencing) != (holder, fencing) or row.expires_at <= now:
                return False
            row.expires_at = now + ttl_s
            return True

        return await self._call(run)  # type: ignore[return-value]

    async def release(self, name: str, holder: str, fencing: int) -> None:
        def run() -> None:
            self.db.statements["release"] += 1
            row, now = self.db.rows.get(name), self.db.now()
            if row is not None and (row.holder, row.fencing) == (holder, fencing) and row.expires_at > now:
                row.expires_at = now

        await self._call(run)

    async def heartbeat(self, instance: str, ttl_s: float) -> int:
        def run() -> int:
            now = self.db.now()
            self.db.rows[INSTANCE_PREFIX + instance] = Row(instance, now + ttl_s, 0)
            return sum(
                1 for key, row in self.db.rows.items() if key.startswith(INSTANCE_PREFIX) and row.expires_at > now
            )

        return await self._call(run)  # type: ignore[return-value]

    async def leave(self, instance: str) -> None:
        def run() -> None:
            self.db.rows.pop(INSTANCE_PREFIX + instance, None)

        await self._call(run)

    async def holder(self, name: str) -> str | None:
        return await self._call(lambda: self.db.holder(name))  # type: ignore[return-value]


@attrs.define
class Gaps:
    """The gap ledger: every replica's stops and closes in one list; open gaps are each replica's own."""

    stops: list[tuple[str, str, float]] = attrs.Factory(list)
    closed: list[tuple[str, float]] = attrs.Factory(list)
    opened: dict[tuple[str, str], float] = attrs.Factory(dict)

    def of(self, replica: str) -> ReplicaGaps:
        return ReplicaGaps(self, replica)


@attrs.frozen
class ReplicaGaps:
    ledger: Gaps
    replica: str

    def stopped(self, feed: str, reason: str) -> None:
        self.ledger.stops.append((feed, reason, trio.current_time()))
        self.ledger.opened.setdefault((self.replica, feed), trio.current_time())

    def receiving(self, feed: str) -> None:
        if self.ledger.opened.pop((self.replica, feed), None) is not None:
            self.ledger.closed.append((feed, trio.current_time()))

    def open_gaps(self) -> dict[str, float]:
        return {feed: at for (replica, feed), at in self.ledger.opened.items() if replica == self.replica}


@attrs.define
class Reads:
    """Every frame read, by whom and when; each one checked against the database as it is read."""

    db: Database
    log: list[tuple[str, str, float]] = attrs.Factory(list)
    violations: list[tuple[str, str, float, str | None]] = attrs.Factory(list)
    """Frames read by a replica the database did not name the live holder (the supervisor would swallow a raise)."""
    strict: bool = True

    def check(self, replica: str, feed: str) -> None:
        holder = self.db.holder(FEED_PREFIX + feed)
        if self.strict and holder != replica:
            self.violations.append((replica, feed, trio.current_time(), holder))
        self.log.append((replica, feed, trio.current_time()))

    def by(self, replica: str, feed: str) -> list[float]:
        return [at for who, what, at in self.log if (who, what) == (replica, feed)]


@attrs.define
class Sink:
    replica: Replica
    reads: Reads

    def connected(self, feed: str) -> None:
        pass

    async def emit(self, frame: ReceivedFrame) -> None:
        self.reads.check(self.replica.name, frame.feed)


def feed_run(replica: Replica, feed: str) -> Callable[[object], Awaitable[None]]:
    """A stream that delivers a frame every 50 ms while its process runs (not while it is frozen)."""

    async def run(sink: object) -> None:
        assert isinstance(sink, AttemptSink)
        sink.connected(feed)
        while True:
            await trio.sleep(0.05)
            if replica.frozen:
                # a frozen process sees no cancellation; resumed, the socket's data reaches the feed first
                with trio.CancelScope(shield=True):
                    await replica.thawed.wait()
            await sink.emit(ReceivedFrame(feed, T0, "{}"))

    return run


@attrs.define
class Cluster:
    db: Database = attrs.Factory(Database)
    feeds: tuple[str, ...] = ("console",)
    reads: Reads = attrs.field(init=False)
    gaps: Gaps = attrs.Factory(Gaps)
    coordinators: dict[str, LeaseCoordinator] = attrs.Factory(dict)
    replicas: dict[str, Replica] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.reads = Reads(self.db)

    async def start(self, nursery: trio.Nursery, name: str, **replica: object) -> Replica:
        view = Replica(self.db, name, **replica)  # type: ignore[arg-type]
        coordinator = LeaseCoordinator(view, name, self.feeds, TIMING, PipelineStats(), self.gaps.of(name))
        self.replicas[name], self.coordinators[name] = view, coordinator
        scope = self.scopes[name] = trio.CancelScope()

        async def process() -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(coordinator.serve_heartbeat)
                    for feed in self.feeds:
                        supervise = functools.partial(
                            supervise_feed, feed, feed_run(view, feed), Sink(view, self.reads),
                            BackoffPolicy(initial_s=0.1, max_s=0.1, jitter=0), coordinator.stats,
                        )  # fmt: skip

                        async def leased(lease: Lease, supervise: Callable[..., Awaitable[None]] = supervise) -> None:
                            await supervise(lease_valid=lease.valid)

                        inner.start_soon(coordinator.run_leased, feed, leased)

        nursery.start_soon(process)
        await trio.lowlevel.checkpoint()
        return view

    def kill(self, name: str) -> None:
        """SIGKILL: nothing more reaches the database or the stream; no release, no goodbye."""
        self.replicas[name].killed = True
        self.scopes[name].cancel()

    def held(self) -> dict[str, set[str]]:
        return {
            name: {feed for feed, held in c.stats.lease_held.items() if held} for name, c in self.coordinators.items()
        }


def first_read_after(times: list[float], at: float) -> float:
    return min(t for t in times if t > at)


async def test_a_lone_replica_takes_its_lease_after_one_heartbeat_and_keeps_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster(feeds=("console", "polygon"))
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, "a")
        await trio.sleep(60)
        assert cluster.held() == {"a": {"console", "polygon"}}
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    reads = cluster.reads.by("a", "console")
    assert TIMING.settle_s <= reads[0] <= TIMING.settle_s + 0.2  # a short settle after its first heartbeat
    assert len(reads) > 1000
    assert {row.fencing for key, row in cluster.db.rows.items() if key.startswith(FEED_PREFIX)} == {1}
    # renewed every T/3: about 60 / 1 renewals per feed, and never more than needed
    assert 55 * 2 <= cluster.db.statements["renew"] <= 61 * 2
    assert cluster.gaps.stops == []


async def test_after_the_holder_is_killed_the_standby_reads_within_ttl_and_a_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, "a")
        await trio.sleep(1)
        await cluster.start(nursery, "b")
        await trio.sleep(10)
        assert cluster.held() == {"a": {"console"}, "b": set()}
        cluster.kill("a")
        killed_at = trio.current_time()
        await trio.sleep(10)
        assert cluster.held()["b"] == {"console"}
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    last_a = max(cluster.reads.by("a", "console"))
    first_b = min(cluster.reads.by("b", "console"))
    assert last_a <= killed_at < first_b
    assert first_b - last_a <= TTL + TIMING.poll_s + 0.1
    assert cluster.db.rows[FEED_PREFIX + "console"].fencing == 2


@pytest.mark.parametrize("latency_s", [0.0, 0.3])
@pytest.mark.parametrize("skew_s", [-3600.0, 0.0, 7200.0])
async def test_a_frozen_holder_reads_nothing_once_resumed_and_never_beside_the_new_one(
    autojump_clock: trio.testing.MockClock, latency_s: float, skew_s: float
) -> None:
    """SIGSTOP then SIGCONT, with a slow link and a database whose clock is hours off everyone's."""
    cluster = Cluster(db=Database(skew=skew_s))
    async with trio.open_nursery() as nursery:
        a = await cluster.start(nursery, "a", latency_s=latency_s)
        await trio.sleep(1)
        await cluster.start(nursery, "b", latency_s=latency_s)
        await trio.sleep(10.02)
        a.frozen = True
        frozen_at = trio.current_time()
        await trio.sleep(3 * TTL)
        a.thawed.set()
        a.frozen = False
        thawed_at = trio.current_time()
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    reads_a, reads_b = cluster.reads.by("a", "console"), cluster.reads.by("b", "console")
    assert max(reads_a) <= frozen_at + 0.05  # nothing after the freeze, not even the frame waiting at the thaw
    assert not [t for t in reads_a if t >= thawed_at]
    assert frozen_at < min(reads_b) <= frozen_at + TTL + TIMING.poll_s + 4 * latency_s + 0.1
    assert ("console", LEASE_LOST) in [(feed, reason) for feed, reason, _ in cluster.gaps.stops]


async def test_a_holder_cut_off_from_the_database_stops_before_its_lease_can_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        a = await cluster.start(nursery, "a")
        await trio.sleep(5)
        a.down = True
        down_at = trio.current_time()
        await trio.sleep(2 * TTL)
        stopped = [at for feed, reason, at in cluster.gaps.stops if reason == LEASE_LOST]
        assert len(stopped) == 1
        expiry = cluster.db.rows[FEED_PREFIX + "console"].expires_at - cluster.db.skew
        # it stopped at its local deadline, at least the margin before the lease's expiry in the database
        assert stopped[0] <= expiry - TIMING.margin_s + 1e-9
        assert down_at < stopped[0]
        a.down = False
        await trio.sleep(TTL)
        assert cluster.held() == {"a": {"console"}}  # back: it takes the lease again (a new tenure)
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    assert cluster.db.rows[FEED_PREFIX + "console"].fencing == 2


async def test_a_lease_taken_from_under_the_holder_stops_it_at_the_next_renewal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, "a")
        await trio.sleep(5)
        row = cluster.db.rows[FEED_PREFIX + "console"]
        cluster.db.rows[FEED_PREFIX + "console"] = Row("operator", row.expires_at, row.fencing + 1)
        cluster.reads.strict = False  # an operator's doing, not a lease's: the holder reads on until it renews
        taken_at = trio.current_time()
        await trio.sleep(TTL)
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    stolen_until = row.expires_at  # then the operator's row expires, and a takes the lease again
    late = [at for at in cluster.reads.by("a", "console") if taken_at + TIMING.renew_every_s + 0.05 < at < stolen_until]
    assert late == []
    assert [(feed, reason) for feed, reason, _ in cluster.gaps.stops] == [("console", LEASE_LOST)]


async def test_a_stopping_holder_releases_at_once_and_the_standby_takes_over_within_a_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, "a")
        await trio.sleep(1)
        await cluster.start(nursery, "b")
        await trio.sleep(5)
        cluster.scopes["a"].cancel()  # SIGTERM: the feeds are cancelled, the leases released
        stopped_at = trio.current_time()
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    last_a, first_b = max(cluster.reads.by("a", "console")), min(cluster.reads.by("b", "console"))
    assert last_a <= stopped_at < first_b <= stopped_at + TIMING.poll_s + 0.1
    assert cluster.gaps.stops == []  # stopping is not a lease's gap: the stop itself is recorded elsewhere
    assert INSTANCE_PREFIX + "a" not in cluster.db.rows  # it left: the others need not wait for its heartbeat


async def test_feeds_spread_over_the_replicas_and_a_dead_ones_are_taken_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feeds = ("benzinga", "console", "polygon", "schwab", "tastytrade")
    cluster = Cluster(feeds=feeds)
    async with trio.open_nursery() as nursery:
        await cluster.start(nursery, "a")
        await trio.sleep(5)
        assert len(cluster.held()["a"]) == 5
        await cluster.start(nursery, "b")
        await trio.sleep(5)
        assert sorted(map(len, cluster.held().values())) == [2, 3]
        await cluster.start(nursery, "c")
        await trio.sleep(5)
        held = cluster.held()
        assert sorted(map(len, held.values())) == [1, 2, 2]
        assert set().union(*held.values()) == set(feeds)
        handovers = [(feed, at) for feed, reason, at in cluster.gaps.stops if reason == LEASE_HANDED_OVER]
        assert len(handovers) == 3  # 5→3+2, then 3+2→2+2+1: each handover is a ledger row...
        assert cluster.gaps.opened == {}  # ...closed once the replica that gave it up sees it held elsewhere
        for feed, at in handovers:
            first = min(t for who, what, t in cluster.reads.log if what == feed and t > at)
            closes = [t for what, t in cluster.gaps.closed if what == feed and t >= at]
            assert closes, (feed, at, handovers, cluster.gaps.closed, cluster.gaps.stops)
            assert first - TIMING.poll_s <= closes[0] <= first + TIMING.poll_s + 0.01
        victim = max(held, key=lambda name: len(held[name]))
        cluster.kill(victim)
        await trio.sleep(2 * TTL)
        held = cluster.held()
        del held[victim]
        assert sorted(map(len, held.values())) == [2, 3]
        assert set().union(*held.values()) == set(feeds)
        nursery.cancel_scope.cancel()
    assert cluster.reads.violations == []
    for name, coordinator in cluster.coordinators.items():
        assert coordinator.limit == math.ceil(len(feeds) / coordinator.live_instances), name


async def test_the_sink_passes_nothing_on_past_the_lease_deadline(autojump_clock: trio.testing.MockClock) -> None:
    passed: list[ReceivedFrame] = []

    @attrs.define
    class Inner:
        def connected(self, feed: str) -> None:
            pass

        async def emit(self, frame: ReceivedFrame) -> None:
            passed.append(frame)

    lease = Lease("console", 1, deadline=trio.current_time() + 1, acquired_at=trio.current_time())
    sink = AttemptSink(Inner(), trio.TASK_STATUS_IGNORED, lease.valid)
    await sink.emit(ReceivedFrame("console", T0, "1"))
    await trio.sleep(1)
    with trio.move_on_after(5) as waited:
        await sink.emit(ReceivedFrame("console", T0, "2"))
    assert waited.cancelled_caught
    assert [frame.text for frame in passed] == ["1"]


def test_the_default_timing() -> None:
    timing = LeaseTiming(10.0)
    assert (timing.renew_every_s, timing.margin_s, timing.poll_s, timing.settle_s) == (10 / 3, 2.5, 1.0, 0.5)
    assert timing.deadline(100.0) == 107.5  # sent at 100: the database's expiry is at 110 or later
    assert LeaseTiming(2.0).poll_s == 0.4
