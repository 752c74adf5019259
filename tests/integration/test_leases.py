"""The lease statements against real PostgreSQL: tenure, fencing, expiry on the database's clock, heartbeats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
import trio

from bridge.adapters.postgres.leases import FEED_PREFIX, PostgresLeases, open_leases

NAME = FEED_PREFIX + "console"


@pytest.fixture
async def leases(database_url: str) -> AsyncIterator[PostgresLeases]:
    with open_leases(database_url) as store:
        yield store


def row(url: str, name: str = NAME) -> tuple[str, int, bool]:
    with psycopg.connect(url) as connection:
        found = connection.execute(
            "select holder, fencing, expires_at > now() from bridge_leases where name = %s", [name]
        ).fetchone()
    assert found is not None
    return found


async def test_a_live_lease_has_one_holder_and_every_tenure_a_new_fencing_number(
    leases: PostgresLeases, database_url: str
) -> None:
    assert await leases.acquire(NAME, "a", 30) == 1
    assert await leases.acquire(NAME, "b", 30) is None
    assert await leases.acquire(NAME, "a", 30) is None  # not even its own holder's name takes a live lease
    assert await leases.renew(NAME, "a", 1, 30) is True
    assert await leases.renew(NAME, "b", 1, 30) is False
    assert await leases.renew(NAME, "a", 2, 30) is False  # another tenure's number
    await leases.release(NAME, "b", 1)  # not b's: nothing happens
    assert row(database_url) == ("a", 1, True)
    await leases.release(NAME, "a", 1)
    assert row(database_url) == ("a", 1, False)
    assert await leases.renew(NAME, "a", 1, 30) is False  # released is over
    assert await leases.acquire(NAME, "b", 30) == 2
    assert row(database_url) == ("b", 2, True)
    await leases.release(NAME, "a", 1)  # a stale release cannot end b's tenure
    assert row(database_url) == ("b", 2, True)


async def test_expiry_is_the_databases_clock(leases: PostgresLeases, database_url: str) -> None:
    assert await leases.acquire(NAME, "a", 0.3) == 1
    assert await leases.acquire(NAME, "b", 0.3) is None
    await trio.sleep(0.4)
    assert await leases.renew(NAME, "a", 1, 30) is False  # expired: renewing cannot revive it
    assert await leases.acquire(NAME, "b", 30) == 2
    # whatever the replica's clock says, expires_at is the database's now() plus the TTL
    with psycopg.connect(database_url) as connection:
        left = connection.execute(
            "select extract(epoch from expires_at - now()) from bridge_leases where name = %s", [NAME]
        ).fetchone()
    assert left is not None and 29 < float(left[0]) <= 30


async def test_heartbeats_count_the_live_replicas(leases: PostgresLeases) -> None:
    assert await leases.heartbeat("a", 0.5) == 1
    assert await leases.heartbeat("b", 30) == 2
    assert await leases.heartbeat("a", 0.5) == 2  # beating again does not count it twice
    await trio.sleep(0.6)
    assert await leases.heartbeat("b", 30) == 1  # a stopped beating
    await leases.leave("b")
    assert await leases.heartbeat("c", 30) == 1


async def test_concurrent_acquisitions_make_one_holder(leases: PostgresLeases) -> None:
    won: list[str] = []

    async def race(holder: str) -> None:
        if await leases.acquire(NAME, holder, 30) is not None:
            won.append(holder)

    async with trio.open_nursery() as nursery:
        for holder in "abcd":
            nursery.start_soon(race, holder)
    assert len(won) == 1
