"""The benzinga feed end to end: the vendor's stream on a loopback server, real PostgreSQL."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import orjson
import trio

from bridge.adapters.feeds.benzinga import BenzingaFeed
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.adapters.recording import RecordingWriter
from bridge.adapters.replay import ReplayFeed
from bridge.adapters.simulator.benzinga import BenzingaScenario, SentLog, serve_benzinga_simulator
from bridge.app.pipeline import run_bridge
from bridge.app.service import normalizers, stop_when, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.models import ReceivedFrame, Table
from tests.integration.helpers import never, query
from tests.integration.test_pipeline_postgres import AT, CONFIG

TOKEN = "bz.production-token"


def expected_state(messages: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    """article id → (last action, last title), from the messages in the order they were sent."""
    state: dict[int, tuple[str, str]] = {}
    for message in messages:
        data = message["data"]
        state[data["content"]["id"]] = (data["action"].lower(), data["content"]["title"])
    return state


async def test_a_live_stream_with_updates_removals_repeats_disconnects_and_bad_frames(
    database_url: str, repository: PostgresRepository
) -> None:
    sent = SentLog(keep_messages=True)
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_benzinga_simulator, token=TOKEN, messages_per_second=None, total_messages=600,
            disconnect_every_frames=40, bad_frame_every=50, log=sent))  # fmt: skip
        feed = BenzingaFeed(url=url, api_key=TOKEN, clock=utc_now, ping_interval_s=1)
        done = stop_when(lambda: sent.messages_sent >= 600 and stats.total_frames >= sent.frames_sent)
        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, done)
        nursery.cancel_scope.cancel()
    assert stats.feed_restarts["benzinga"] >= 10
    state = expected_state(sent.messages)
    rows = query(database_url, "select (raw->'data'->'content'->>'id')::bigint, lower(raw->'data'->>'action'),"
                               " headline, source from news_events")  # fmt: skip
    assert len(rows) == len(state)  # one row per article: repeats and updates wrote no second row
    for article_id, action, headline, source in rows:
        expected_action, expected_title = state[article_id]
        assert source == "benzinga"
        if expected_action in ("removed", "deleted"):
            assert action == expected_action  # withdrawn: the row stays, raw says so
        else:
            assert (action, headline) == (expected_action, expected_title)
    letters = query(database_url, "select feed, reason from bridge_dead_letters")
    assert len(letters) == sent.bad_frames_sent > 0
    assert all(feed == "benzinga" and reason.startswith("invalid JSON") for feed, reason in letters)


def article_frames() -> list[ReceivedFrame]:
    messages = list(itertools.islice(BenzingaScenario(seed=3).messages(), 80))
    return [ReceivedFrame("benzinga", AT, orjson.dumps(message).decode()) for message in messages]


async def test_replays_duplicates_in_a_batch_and_two_replicas_write_each_article_once(
    tmp_path: Path, database_url: str
) -> None:
    frames = article_frames()
    recording = tmp_path / "news.jsonl"
    with RecordingWriter(recording) as writer:
        for frame in [*frames, frames[0], frames[0]]:  # the same article three times, in one batch
            writer(frame)

    async def replica(repository: PostgresRepository) -> None:
        assert await run_bridge([ReplayFeed([recording])], repository, normalizers(), CONFIG, PipelineStats(),
                                utc_now, never)  # fmt: skip

    with open_repository(database_url) as first, open_repository(database_url) as second:
        async with trio.open_nursery() as nursery:  # two replicas reading the same stream at once
            nursery.start_soon(replica, first)
            nursery.start_soon(replica, second)
        snapshot = query(database_url, "select * from news_events order by id")
        await replica(first)  # and a replay later
    assert query(database_url, "select * from news_events order by id") == snapshot
    articles = {orjson.loads(frame.text)["data"]["content"]["id"] for frame in frames}
    assert len(snapshot) == len(articles)
    unique = query(database_url, "select count(distinct (source, event_ts, headline)) from news_events")
    assert unique == [(len(articles),)]


async def test_a_headline_change_updates_the_row_and_a_removal_keeps_it(
    database_url: str, repository: PostgresRepository
) -> None:
    def message(action: str, title: str) -> ReceivedFrame:
        content = {"id": 77, "title": title, "created_at": "2026-11-20T14:00:00Z", "body": "<b>x</b>"}
        return ReceivedFrame("benzinga", AT, orjson.dumps({"data": {"action": action, "content": content}}).decode())

    for frame in (message("Created", "First headline"), message("Updated", "Second headline")):
        stats = PipelineStats()

        class One:
            name, finite = "one", True

            async def run(self, sink: Any, frame: ReceivedFrame = frame) -> None:
                await sink.emit(frame)

        assert await run_bridge([One()], repository, normalizers(), CONFIG, stats, utc_now, never)
    assert query(database_url, "select headline from news_events") == [("Second headline",)]
    repository.write(Table.NEWS_EVENTS, normalizers()["benzinga"](message("Removed", "")).rows)
    assert query(database_url, "select headline, raw->'data'->>'action' from news_events") == [
        ("Second headline", "Removed")
    ]


async def test_a_token_the_vendor_rejects_is_reported_clearly(repository: PostgresRepository) -> None:
    stats = PipelineStats()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_benzinga_simulator, token=TOKEN))
        feed = BenzingaFeed(url=url, api_key="wrong-token", clock=utc_now)

        async def one_second() -> None:
            await trio.sleep(1)

        with trio.fail_after(30):
            assert await run_bridge([feed], repository, normalizers(), CONFIG, stats, utc_now, one_second)
        nursery.cancel_scope.cancel()
    assert "refused the credentials (HTTP 401)" in stats.feed_last_error["benzinga"]
    assert stats.feed_restarts["benzinga"] == 1
    assert "wrong-token" not in stats.feed_last_error["benzinga"]
