"""The benzinga feed end to end: the vendor's stream on a loopback server, real PostgreSQL."""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
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
from bridge.domain.policies import BackoffPolicy
from tests.integration.helpers import never, query
from tests.integration.test_pipeline_postgres import AT, CONFIG

TOKEN = "bz.production-token"
VENDORS = Path(__file__).parents[1] / "fixtures" / "vendors" / "benzinga"


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
        done = stop_when(lambda: sent.extra["published"] >= 600 and stats.total_frames >= sent.frames_sent)
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


def final_state(messages: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    """article id → (last action, last title) of what the newsroom published, in order."""
    return {m["data"]["content"]["id"]: (m["data"]["action"].lower(), m["data"]["content"]["title"]) for m in messages}


async def stream_with_gaps(
    repository: PostgresRepository, *, replay: bool, accepts_actions: bool = True, published: int = 240
) -> tuple[SentLog, PipelineStats, BenzingaFeed, list[dict[str, Any]]]:
    """News at 40 a second; the server drops the client every 30 frames and the feed waits 0.3 s to
    reconnect, so about 12 messages are published while nobody is connected, each time. The stream's replay
    holds the last 100: a reconnect would have to take 2.5 s (a loaded machine) before news is lost."""
    start = utc_now() - timedelta(minutes=1)  # the scenario's times are relative to the feed's clock
    sent = SentLog(keep_messages=True)
    stats = PipelineStats()
    config = attrs.evolve(CONFIG, feed_restart=BackoffPolicy(initial_s=0.3, max_s=0.3, jitter=0))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_benzinga_simulator, token=TOKEN, messages_per_second=40, total_messages=published,
            disconnect_every_frames=30, accepts_actions=accepts_actions, start=start, seed=5, log=sent))  # fmt: skip
        feed = BenzingaFeed(url=url, api_key=TOKEN, clock=utc_now, ping_interval_s=5, replay_on_reconnect=replay)

        def settled() -> bool:  # everything published, the last reconnect's replay answered and all received
            answered = not replay or feed.protocol.replay_refused or sent.extra["replays"] == sent.connections - 1
            return sent.extra["published"] >= published and answered and stats.total_frames >= sent.frames_sent

        with trio.fail_after(60):
            assert await run_bridge([feed], repository, normalizers(), config, stats, utc_now, stop_when(settled))
        nursery.cancel_scope.cancel()
    newsroom = list(itertools.islice(BenzingaScenario(seed=5, start=start).messages(), published))
    return sent, stats, feed, newsroom


async def test_news_published_during_disconnects_lands_once_per_article_through_replay(
    database_url: str, repository: PostgresRepository
) -> None:
    sent, stats, feed, newsroom = await stream_with_gaps(repository, replay=True)
    assert stats.feed_restarts["benzinga"] >= 3
    assert sent.extra["published_while_disconnected"] >= 3 * 10  # the gaps were real
    assert feed.protocol.replays_sent == sent.extra["replays"] == sent.connections - 1  # after each reconnect only
    assert sent.extra["replayed"] > sent.extra["published_while_disconnected"]  # replays overlap what landed
    expected = final_state(newsroom)
    rows = query(database_url, "select (raw->'data'->'content'->>'id')::bigint, lower(raw->'data'->>'action'),"
                               " headline from news_events")  # fmt: skip
    assert len(rows) == len(expected)  # every article published, exactly once
    for article_id, action, headline in rows:
        expected_action, expected_title = expected[article_id]
        assert action == expected_action
        if expected_action not in ("removed", "deleted"):
            assert headline == expected_title
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_without_replay_news_published_during_a_disconnect_is_missing(
    database_url: str, repository: PostgresRepository
) -> None:
    """The control for the test above: the same stream, no replay, and the gaps' articles are lost."""
    sent, _, feed, newsroom = await stream_with_gaps(repository, replay=False)
    assert sent.extra["replays"] == feed.protocol.replays_sent == 0
    delivered = final_state(sent.messages)
    assert query(database_url, "select count(*) from news_events") == [(len(delivered),)]
    assert len(delivered) < len(final_state(newsroom))


async def test_an_endpoint_that_refuses_text_makes_the_feed_stop_asking_for_replays(
    database_url: str, repository: PostgresRepository
) -> None:
    """A server following the v1 spec closes the connection on any text: one replay request, then none."""
    sent, stats, feed, _ = await stream_with_gaps(repository, replay=True, accepts_actions=False, published=150)
    assert feed.protocol.replay_refused
    assert feed.protocol.replays_sent == sent.extra["text_refused"] == 1
    assert stats.feed_restarts["benzinga"] >= 3  # it went on streaming, reconnecting without asking
    assert query(database_url, "select count(*) from news_events") == [(len(final_state(sent.messages)),)]


async def test_a_v1_removal_without_content_marks_nothing_and_invents_no_row(
    database_url: str, repository: PostgresRepository
) -> None:
    """The v1 spec's own example, then a removal carrying only its event id: one article, unmarked, one dead letter."""
    created = (VENDORS / "news_stream_v1_example.json").read_text()
    removed = (VENDORS / "news_stream_v1_removed.json").read_text()
    at = datetime(2012, 2, 18, 9, 0, 1, tzinfo=UTC)

    class Two:
        name, finite = "benzinga", True

        async def run(self, sink: Any) -> None:
            for text in (created, removed):
                await sink.emit(ReceivedFrame("benzinga", at, text))

    assert await run_bridge([Two()], repository, normalizers(), CONFIG, PipelineStats(), utc_now, never)
    assert query(database_url, "select headline, raw->'data'->>'action', event_ts from news_events") == [
        ("Company A reports record earnings in Q1", "Created", datetime(2012, 2, 17, 21, 1, 39, tzinfo=UTC))
    ]
    ((reason,),) = query(database_url, "select reason from bridge_dead_letters")
    assert "data.id is the event's id, not the article's" in reason


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
