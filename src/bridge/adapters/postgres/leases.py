"""Feed leases in PostgreSQL (table ``bridge_leases``): single statements on the database's clock.

Every operation is one statement in its own short transaction, with no session state and no advisory
lock, so it works through a transaction pooler. Expiry is always decided by ``now()`` in the database:
replicas whose clocks disagree still agree on who holds a lease, because none of them compares its own
clock with ``expires_at``. The caller keeps its own, earlier, deadline on its monotonic clock (see
``bridge.app.leases``).

The lease pool is separate from the writers' (two connections), so renewals do not queue behind a slow
batch; each statement runs under a short ``statement_timeout`` (set per transaction: also right behind
a transaction pooler), and the calls run in worker threads on a limiter of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.adapters.postgres.repository import RECONNECT_FOREVER_S, PoolMode, resolve_pool_mode
from bridge.logs import get_logger

log = get_logger(__name__, component="leases")

INSTANCE_PREFIX: Final = "instance:"
FEED_PREFIX: Final = "feed:"

_ACQUIRE: Final = """
insert into public.bridge_leases as lease (name, holder, expires_at, fencing, acquired_at, renewed_at)
values (%(name)s, %(holder)s, now() + make_interval(secs => %(ttl)s), 1, now(), now())
on conflict (name) do update
    set holder = excluded.holder, expires_at = excluded.expires_at, fencing = lease.fencing + 1,
        acquired_at = now(), renewed_at = now()
    where lease.expires_at <= now()
returning fencing
"""
"""Take a lease that nobody holds (never held, expired or released): a new tenure, so ``fencing`` + 1.

A lease still live is never taken, not even by a process of the same ``holder`` name: two processes
mistakenly sharing a name still cannot both hold it."""

_RENEW: Final = """
update public.bridge_leases
    set expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now()
    where name = %(name)s and holder = %(holder)s and fencing = %(fencing)s and expires_at > now()
returning fencing
"""

_RELEASE: Final = """
update public.bridge_leases set expires_at = now()
    where name = %(name)s and holder = %(holder)s and fencing = %(fencing)s and expires_at > now()
"""

_HEARTBEAT: Final = """
with beat as (
    insert into public.bridge_leases as lease (name, holder, expires_at, fencing)
    values (%(name)s, %(holder)s, now() + make_interval(secs => %(ttl)s), 0)
    on conflict (name) do update
        set holder = excluded.holder, expires_at = excluded.expires_at, renewed_at = now()
    returning name
)
select 1 + count(*) from public.bridge_leases
    where name like 'instance:%%' and name <> %(name)s and expires_at > now()
"""
"""This replica's heartbeat and the number of live replicas, itself included, in one statement (the
query sees the table as it was before the insert, so the others are counted and this one added)."""

_HOLDER: Final = "select holder from public.bridge_leases where name = %(name)s and expires_at > now()"

_LEAVE: Final = "delete from public.bridge_leases where name = %(name)s and holder = %(holder)s"

STATEMENT_TIMEOUT_MS: Final = 2_000


class LeaseStoreUnavailable(Exception):
    """The database did not answer a lease statement (down, slow, refused): the caller tries again later."""


_ERRORS: Final = (psycopg.Error, PoolTimeout, OSError)


class PostgresLeases:
    """``bridge.app.leases.LeaseStore`` on PostgreSQL."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self._limiter = trio.CapacityLimiter(4)

    async def acquire(self, name: str, holder: str, ttl_s: float) -> int | None:
        row = await self._run(_ACQUIRE, {"name": name, "holder": holder, "ttl": ttl_s})
        return None if row is None else int(row[0])

    async def renew(self, name: str, holder: str, fencing: int, ttl_s: float) -> bool:
        row = await self._run(_RENEW, {"name": name, "holder": holder, "fencing": fencing, "ttl": ttl_s})
        return row is not None

    async def release(self, name: str, holder: str, fencing: int) -> None:
        await self._run(_RELEASE, {"name": name, "holder": holder, "fencing": fencing}, fetch=False)

    async def heartbeat(self, instance: str, ttl_s: float) -> int:
        row = await self._run(_HEARTBEAT, {"name": INSTANCE_PREFIX + instance, "holder": instance, "ttl": ttl_s})
        return 1 if row is None else int(row[0])

    async def leave(self, instance: str) -> None:
        await self._run(_LEAVE, {"name": INSTANCE_PREFIX + instance, "holder": instance}, fetch=False)

    async def holder(self, name: str) -> str | None:
        row = await self._run(_HOLDER, {"name": name})
        return None if row is None else str(row[0])

    async def _run(self, statement: str, params: dict[str, Any], *, fetch: bool = True) -> tuple[Any, ...] | None:
        # abandon_on_cancel: a caller that gives up on a hung statement is not held by it (the thread
        # ends at the statement timeout and returns its connection)
        return await trio.to_thread.run_sync(
            self._run_sync, statement, params, fetch, limiter=self._limiter, abandon_on_cancel=True
        )

    def _run_sync(self, statement: str, params: dict[str, Any], fetch: bool) -> tuple[Any, ...] | None:
        try:
            with self.pool.connection(timeout=STATEMENT_TIMEOUT_MS / 1000) as connection:
                connection.execute("select set_config('statement_timeout', %s, true)", [str(STATEMENT_TIMEOUT_MS)])
                cursor = connection.execute(statement, params)
                return cursor.fetchone() if fetch else None
        except _ERRORS as exc:
            lines = str(exc).strip().splitlines()
            raise LeaseStoreUnavailable(f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}") from None


@contextmanager
def open_leases(conninfo: str, *, pool_mode: PoolMode = "auto") -> Iterator[PostgresLeases]:
    """A two-connection pool for leases; opened in the background, as a database that is down is an outage."""
    kwargs: dict[str, Any] = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if resolve_pool_mode(conninfo, pool_mode) == "transaction":
        kwargs["prepare_threshold"] = None
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo, min_size=1, max_size=2, open=False, kwargs=kwargs, timeout=2, name="bridge-leases",
        reconnect_timeout=RECONNECT_FOREVER_S,
    )
    pool.open(wait=False)
    try:
        yield PostgresLeases(pool)
    finally:
        pool.close(timeout=1.0)  # a connection attempt to a database that is away is not worth waiting for
