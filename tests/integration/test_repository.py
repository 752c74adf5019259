"""The PostgreSQL repository's row semantics, for both options_flow paths (COPY staging and unnest)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import attrs
import psycopg
import pytest

from bridge.adapters.postgres.conninfo import DatabaseUnreachable
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.domain.ids import stable_id
from bridge.domain.models import (
    AccountRef,
    BrokerAccountRow,
    BrokerBalanceRow,
    BrokerPositionRow,
    DeadLetter,
    NewsEventRow,
    OptionsFlowRow,
    Table,
)
from bridge.domain.ports import DataRejected
from tests.integration.conftest import fetch_all, with_database

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
ACCOUNT = AccountRef("tastytrade", "5WT0001")


@pytest.fixture(params=[True, False], ids=["copy", "unnest"])
def repo(request: pytest.FixtureRequest, database_url: str) -> Iterator[PostgresRepository]:
    with open_repository(database_url, use_copy=request.param) as repository:
        yield repository


def trade(n: int, **changes: object) -> OptionsFlowRow:
    row = OptionsFlowRow(
        id=stable_id("test", n), received_at=T0, event_ts=T0 + timedelta(seconds=n), symbol="SPY",
        option_symbol="SPY251219C00650000", side="buy", size=Decimal(n + 1), notional=Decimal("123.45"),
        strike=Decimal(650), trade_price=Decimal("1.2345"), raw={"n": n, "text": "tab\there \\ é \"q\""},
    )  # fmt: skip
    return attrs.evolve(row, **changes)


def test_options_flow_is_idempotent_and_exact(repo: PostgresRepository, database_url: str) -> None:
    rows = [trade(n) for n in range(10)]
    assert repo.write(Table.OPTIONS_FLOW, rows + rows[:3]) == 10  # duplicates inside one batch too
    assert repo.write(Table.OPTIONS_FLOW, rows) == 0
    stored = fetch_all(database_url, "options_flow", "event_ts")
    assert len(stored) == 10
    assert stored[0]["raw"] == {"n": 0, "text": 'tab\there \\ é "q"'}
    assert stored[0]["trade_price"] == Decimal("1.2345")
    assert stored[9]["size"] == Decimal(10)


def test_text_columns_with_characters_copy_treats_specially_are_stored_as_given(
    repo: PostgresRepository, database_url: str
) -> None:
    odd = [{"venue": "tab\there"}, {"symbol": "A\\B"}, {"option_symbol": "line\nbreak"}, {"venue": "re\rturn"}]
    rows = [trade(n, **changes) for n, changes in enumerate(odd)]
    rows += [trade(4, venue=None, option_type=None, notional=None, strike=None), trade(5)]
    assert repo.write(Table.OPTIONS_FLOW, rows) == 6
    stored = fetch_all(database_url, "options_flow", "event_ts")
    for changes, row in zip(odd, stored, strict=False):
        assert {column: row[column] for column in changes} == changes
    assert [stored[4][column] for column in ("venue", "option_type", "notional", "strike")] == [None] * 4
    assert (stored[5]["symbol"], stored[5]["venue"]) == ("SPY", None)


def test_new_trades_are_copied_straight_in_and_an_overlap_goes_through_staging(database_url: str) -> None:
    new_york = timezone(timedelta(hours=-5))
    rows = [trade(n, event_ts=T0.astimezone(new_york) + timedelta(microseconds=7 * n + 1),
                  expiration=date(2026, 12, 18)) for n in range(6)]  # fmt: skip
    with open_repository(database_url, use_copy=True) as repository:
        assert repository.write(Table.OPTIONS_FLOW, rows[:4]) == 4
        assert (repository.direct_copies, repository.staged_copies) == (1, 0)
        assert repository.write(Table.OPTIONS_FLOW, rows[2:]) == 2  # two already stored: staged, no error
        assert (repository.direct_copies, repository.staged_copies) == (1, 1)
    stored = fetch_all(database_url, "options_flow", "event_ts")
    assert [row["event_ts"] for row in stored] == [row.event_ts for row in rows]  # exact to the microsecond
    assert [row["id"] for row in stored] == [row.id for row in rows]
    assert {row["expiration"] for row in stored} == {date(2026, 12, 18)}
    assert {row["received_at"] for row in stored} == {T0}


def test_awkward_text_and_nulls_round_trip_exactly(repo: PostgresRepository, database_url: str) -> None:
    awkward = "back\\slash\ttab\nnewline\rreturn é €"
    row = trade(1, symbol=awkward, venue=awkward, raw={"text": awkward, "nested": [{"q": '"'}]}, notional=None,
                strike=None, expiration=None, option_type=None, trade_price=None, bid=None, ask=None)  # fmt: skip
    assert repo.write(Table.OPTIONS_FLOW, [row]) == 1
    (stored,) = fetch_all(database_url, "options_flow")
    assert (stored["symbol"], stored["venue"], stored["raw"]) == (awkward, awkward, row.raw)
    nulls = ("notional", "strike", "expiration", "option_type", "trade_price", "bid", "ask")
    assert [stored[column] for column in nulls] == [None] * len(nulls)


def test_news_updates_by_key_and_keeps_rows_without_time_once(repo: PostgresRepository, database_url: str) -> None:
    def news(body: str, event_ts: datetime | None = T0) -> NewsEventRow:
        key = event_ts.isoformat() if event_ts else None
        return NewsEventRow(id=stable_id("news", "benzinga", key, "Headline"), received_at=T0, source="benzinga",
                            headline="Headline", event_ts=event_ts, body=body)  # fmt: skip

    assert repo.write(Table.NEWS_EVENTS, [news("first"), news("second")]) == 1  # last in the batch wins
    repo.write(Table.NEWS_EVENTS, [news("third")])
    repo.write(Table.NEWS_EVENTS, [news("no time", None), news("no time", None)])
    assert repo.write(Table.NEWS_EVENTS, [news("no time", None)]) == 0  # unchanged: no write
    stored = fetch_all(database_url, "news_events", "body")
    assert [(row["body"], row["event_ts"]) for row in stored] == [("no time", None), ("third", T0)]


def test_accounts_are_created_once_labels_kept_and_ids_cached(repo: PostgresRepository, database_url: str) -> None:
    repo.write(Table.BROKER_ACCOUNTS, [BrokerAccountRow(ACCOUNT, "Main")])
    repo.write(Table.BROKER_ACCOUNTS, [BrokerAccountRow(ACCOUNT, None)])
    repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(ACCOUNT, "SPY", Decimal(1), T0)])
    repo.write(Table.BROKER_BALANCES, [BrokerBalanceRow(AccountRef("schwab", "42"), T0, cash=Decimal(5))])
    accounts = fetch_all(database_url, "broker_accounts", "broker")
    assert [(a["broker"], a["external_account_id"], a["label"]) for a in accounts] == [
        ("schwab", "42", None),
        ("tastytrade", "5WT0001", "Main"),
    ]
    assert set(repo._account_ids) == {ACCOUNT, AccountRef("schwab", "42")}


def test_positions_latest_wins_and_quantity_zero_deletes(repo: PostgresRepository, database_url: str) -> None:
    def position(symbol: str, qty: int, minutes: int) -> BrokerPositionRow:
        return BrokerPositionRow(ACCOUNT, symbol, Decimal(qty), T0 + timedelta(minutes=minutes))

    repo.write(Table.BROKER_POSITIONS, [position("SPY", 10, 5), position("QQQ", 3, 5), position("SPY", 7, 1)])
    assert {r["symbol"]: r["qty"] for r in fetch_all(database_url, "broker_positions")} == {"SPY": 10, "QQQ": 3}
    assert repo.write(Table.BROKER_POSITIONS, [position("SPY", 99, 2)]) == 0  # older than what is stored
    repo.write(Table.BROKER_POSITIONS, [position("QQQ", 0, 4)])  # a close older than the row: ignored
    repo.write(Table.BROKER_POSITIONS, [position("SPY", 0, 6), position("AAPL", 1, 6)])
    assert {r["symbol"]: r["qty"] for r in fetch_all(database_url, "broker_positions")} == {"QQQ": 3, "AAPL": 1}


def test_balances_latest_wins(repo: PostgresRepository, database_url: str) -> None:
    def balance(cash: int, minutes: int) -> BrokerBalanceRow:
        return BrokerBalanceRow(ACCOUNT, T0 + timedelta(minutes=minutes), cash=Decimal(cash), raw={"c": cash})

    repo.write(Table.BROKER_BALANCES, [balance(1, 1), balance(3, 3), balance(2, 2)])
    repo.write(Table.BROKER_BALANCES, [balance(0, 0)])
    (stored,) = fetch_all(database_url, "broker_balances")
    assert (stored["cash"], stored["raw"]) == (3, {"c": 3})


def test_dead_letters_are_idempotent(repo: PostgresRepository, database_url: str) -> None:
    letter = DeadLetter(stable_id("dl", 1), "console", T0, "invalid JSON", "{")
    assert repo.write(Table.DEAD_LETTERS, [letter, letter]) == 1
    assert repo.write(Table.DEAD_LETTERS, [letter]) == 0


def test_content_the_database_refuses_raises_data_rejected_and_writes_nothing(
    repo: PostgresRepository, database_url: str
) -> None:
    bad = trade(99, side="sideways")  # bypasses the normalizer: the check constraint refuses it
    with pytest.raises(DataRejected, match="options_flow_side_check"):
        repo.write(Table.OPTIONS_FLOW, [trade(1), bad])
    assert fetch_all(database_url, "options_flow") == []
    repo.write(Table.OPTIONS_FLOW, [trade(1)])  # the connection is usable afterwards
    assert len(fetch_all(database_url, "options_flow")) == 1


def test_a_cached_account_deleted_behind_our_back_is_recreated(repo: PostgresRepository, database_url: str) -> None:
    repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(ACCOUNT, "SPY", Decimal(1), T0)])
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("delete from broker_positions; delete from broker_accounts")
    repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(ACCOUNT, "SPY", Decimal(2), T0)])
    assert [r["qty"] for r in fetch_all(database_url, "broker_positions")] == [2]


def test_count_rows(repo: PostgresRepository) -> None:
    repo.write(Table.OPTIONS_FLOW, [trade(1), trade(2)])
    counts = repo.count_rows()
    assert counts[Table.OPTIONS_FLOW] == 2 and counts[Table.DEAD_LETTERS] == 0 and len(counts) == len(Table)


def news_row(article: str, headline: str, body: str, event_ts: datetime | None = T0, **changes: object) -> NewsEventRow:
    return NewsEventRow(id=stable_id("news-test", article), received_at=T0, source="benzinga", headline=headline,
                        event_ts=event_ts, body=body, **changes)  # type: ignore[arg-type]  # fmt: skip


def test_news_rows_sharing_a_key_in_one_batch_keep_the_last(repo: PostgresRepository, database_url: str) -> None:
    """Two vendor articles (two ids) with one (source, event_ts, headline): one row, the later content."""
    batch = [news_row("a", "Same", "a1"), news_row("b", "Same", "b1"), news_row("a", "Same", "a2")]
    assert repo.write(Table.NEWS_EVENTS, batch) == 1
    assert [row["body"] for row in fetch_all(database_url, "news_events")] == ["a2"]
    assert repo.write(Table.NEWS_EVENTS, [news_row("b", "Same", "b2")]) == 1  # another id, same key: updates
    (stored,) = fetch_all(database_url, "news_events")
    assert (stored["id"], stored["body"]) == (stable_id("news-test", "a"), "b2")


def test_news_an_article_renamed_frees_its_old_headline_in_the_same_batch(
    repo: PostgresRepository, database_url: str
) -> None:
    repo.write(Table.NEWS_EVENTS, [news_row("a", "Old title", "a1")])
    renamed_and_new = [news_row("a", "New title", "a2"), news_row("c", "Old title", "c1")]
    assert repo.write(Table.NEWS_EVENTS, renamed_and_new) == 2
    stored = {row["headline"]: (row["id"], row["body"]) for row in fetch_all(database_url, "news_events")}
    assert stored == {
        "New title": (stable_id("news-test", "a"), "a2"),
        "Old title": (stable_id("news-test", "c"), "c1"),
    }


def test_news_removal_only_replaces_raw(repo: PostgresRepository, database_url: str) -> None:
    repo.write(Table.NEWS_EVENTS, [news_row("a", "Title", "body", raw={"action": "Created"})])
    removal = news_row("a", "(removed article a)", "", raw={"action": "Removed"}, removal=True)
    assert repo.write(Table.NEWS_EVENTS, [removal]) == 1
    (stored,) = fetch_all(database_url, "news_events")
    assert (stored["headline"], stored["body"], stored["raw"]) == ("Title", "body", {"action": "Removed"})
    assert repo.write(Table.NEWS_EVENTS, [removal]) == 0


def test_an_equal_timestamp_lets_the_later_update_win(repo: PostgresRepository, database_url: str) -> None:
    repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(ACCOUNT, "SPY", Decimal(1), T0),
                                        BrokerPositionRow(ACCOUNT, "SPY", Decimal(2), T0)])  # fmt: skip
    assert [row["qty"] for row in fetch_all(database_url, "broker_positions")] == [2]
    assert repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(ACCOUNT, "SPY", Decimal(3), T0)]) == 1
    assert [row["qty"] for row in fetch_all(database_url, "broker_positions")] == [3]


def test_a_refused_batch_creates_no_account_and_caches_nothing(repo: PostgresRepository, database_url: str) -> None:
    new = AccountRef("schwab", "NEW-1")
    bad = [BrokerPositionRow(new, "SPY", Decimal(1), T0), BrokerPositionRow(new, "Q\x00Q", Decimal(1), T0)]
    with pytest.raises(DataRejected):
        repo.write(Table.BROKER_POSITIONS, bad)
    assert fetch_all(database_url, "broker_accounts") == []
    assert fetch_all(database_url, "broker_positions") == []
    assert new not in repo._account_ids
    assert repo.write(Table.BROKER_POSITIONS, bad[:1]) == 1


@pytest.mark.parametrize("bad", [{"venue": "nul\x00byte"}, {"raw": {"text": "nul\x00byte"}}], ids=["text", "jsonb"])
def test_a_nul_byte_is_refused_as_content_and_the_pool_stays_usable(
    repo: PostgresRepository, database_url: str, bad: dict[str, object]
) -> None:
    with pytest.raises(DataRejected):
        repo.write(Table.OPTIONS_FLOW, [trade(1), trade(2, **bad)])
    assert repo.write(Table.OPTIONS_FLOW, [trade(1), trade(2)]) == 2


def test_writers_on_several_threads_share_new_accounts(repo: PostgresRepository, database_url: str) -> None:
    """One thread per table writer, as the application runs them; accounts appear once each."""
    accounts = [AccountRef("tradier", f"ACC{n}") for n in range(5)]
    errors: list[BaseException] = []

    def positions(worker: int) -> None:
        try:
            for step in range(5):
                at = T0 + timedelta(seconds=step)
                repo.write(Table.BROKER_POSITIONS, [BrokerPositionRow(a, f"S{worker}", Decimal(step), at)
                                                    for a in accounts])  # fmt: skip
                repo.write(Table.BROKER_BALANCES, [BrokerBalanceRow(a, at, cash=Decimal(step)) for a in accounts])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=positions, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(fetch_all(database_url, "broker_accounts")) == 5
    assert len(fetch_all(database_url, "broker_balances")) == 5
    assert {row["qty"] for row in fetch_all(database_url, "broker_positions")} == {Decimal(4)}
    assert len(repo._account_ids) == 5


def test_an_unreachable_database_fails_fast_in_one_line_without_the_password() -> None:
    started = time.monotonic()
    with (
        pytest.raises(DatabaseUnreachable) as caught,
        open_repository("postgresql://bridge:Sup3rSecret@127.0.0.1:1/postgres", open_timeout_s=30),
    ):
        pass
    assert time.monotonic() - started < 5  # the probe fails at once; the pool would wait for its timeout
    message = str(caught.value)
    assert "\n" not in message and "Sup3rSecret" not in message
    assert message.startswith("cannot reach the database at postgresql://bridge:***@127.0.0.1:1/postgres: ")


def test_an_unmigrated_database_is_reported_when_the_repository_opens(postgres_server_url: str) -> None:
    name = f"bridge_test_unmigrated_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(f'create database "{name}"')
    try:
        with (
            pytest.raises(DatabaseUnreachable, match="options_flow"),
            open_repository(with_database(postgres_server_url, name)),
        ):
            pass
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as connection:
            connection.execute(f'drop database "{name}" with (force)')
