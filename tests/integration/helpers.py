"""Small helpers the integration tests share."""

from __future__ import annotations

from typing import Any

import psycopg
import trio


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """All rows of one statement, for exact assertions on what PostgreSQL holds."""
    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()  # type: ignore[arg-type]


async def never() -> None:
    """A stop waiter for runs that end by themselves (recordings): no stop is ever requested."""
    await trio.sleep_forever()
