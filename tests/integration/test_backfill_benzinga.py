"""Benzinga gap backfill end to end: a replay too short for the gaps, REST news, real PostgreSQL."""

from __future__ import annotations

import functools
from datetime import timedelta
from email.utils import parsedate_to_datetime

import attrs
import httpx
import trio

from bridge.adapters.backfill.benzinga import BenzingaNews
from bridge.adapters.feeds.benzinga import BenzingaFeed
from bridge.adapters.postgres.repository import PostgresRepository
from bridge.adapters.simulator.benzinga import BenzingaNewsApi, SentLog, serve_benzinga_simulator
from bridge.app.backfill import BenzingaBackfiller
from bridge.app.pipeline import run_bridge
from bridge.app.service import stop_when, utc_now
from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.models import ReceivedFrame
from bridge.domain.normalizers.benzinga import BenzingaNormalizer
from bridge.domain.policies import BackoffPolicy
from tests.integration.helpers import query
from tests.integration.test_pipeline_postgres import CONFIG

TOKEN = "bz.production-token"


async def test_news_the_replay_does_not_reach_back_to_is_backfilled_from_rest(
    database_url: str, repository: PostgresRepository
) -> None:
    """The server keeps only 5 messages for replay while ~30 are published during each disconnect."""
    start = utc_now() - timedelta(minutes=1)
    news_api, sent, stats = BenzingaNewsApi(TOKEN), SentLog(), PipelineStats()
    config = attrs.evolve(CONFIG, feed_restart=BackoffPolicy(initial_s=0.3, max_s=0.3, jitter=0))
    published = 240
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_benzinga_simulator, token=TOKEN, messages_per_second=100, total_messages=published,
            disconnect_every_frames=30, start=start, seed=5, log=sent, replay_size=5, news_api=news_api))  # fmt: skip
        feed = BenzingaFeed(url=url, api_key=TOKEN, clock=utc_now, ping_interval_s=5)
        protocol = feed.protocol
        backfiller = BenzingaBackfiller(
            news=lambda: BenzingaNews(news_api.base_url, TOKEN), clock=utc_now,
            newest_seen=lambda: protocol.newest_before_connection, replay_covered=protocol.replay_covered,
            settle_s=0.2,
        )  # fmt: skip
        feed.backfill = backfiller
        live = [0]

        def tap(frame: ReceivedFrame) -> None:
            live[0] += '"backfill":true' not in frame.text

        def settled() -> bool:
            return (sent.extra["published"] >= published and backfiller.gaps_seen >= 1
                    and backfiller.gaps_done == backfiller.gaps_seen == sent.connections - 1
                    and stats.feed_state.get("benzinga") is FeedState.CONNECTED  # the last gap closed too
                    and live[0] >= sent.frames_sent)  # fmt: skip

        with trio.fail_after(60):
            assert await run_bridge([feed], repository, {"benzinga": BenzingaNormalizer()}, config, stats, utc_now,
                                    stop_when(settled), tap=tap)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert sent.extra["published_while_disconnected"] >= 3 * 10 and sent.extra["replays"] >= 3  # real gaps
    rows = dict(query(database_url, "select (raw->'data'->'content'->>'id')::bigint, headline from news_events"))
    assert {article_id: rows.get(article_id) for article_id in news_api.articles} == {
        article_id: article["title"] for article_id, article in news_api.articles.items()
    }  # every article standing at the end, with its latest headline
    ledger = dict(query(database_url, "select backfill_status, count(*) from bridge_feed_gaps"
                                      " where feed = 'benzinga' and ended_at is not null group by 1"))  # fmt: skip
    # a gap the 5-message replay still covered (a reconnect within 50 ms) needs no backfill; the others got one
    assert set(ledger) <= {"done", "not_applicable"} and ledger.get("done", 0) >= 1
    assert sum(ledger.values()) == backfiller.gaps_seen
    backfilled = query(database_url, "select count(*) from news_events where raw ? 'backfill'")[0][0]
    assert backfilled > 0
    assert query(database_url, "select count(*) from bridge_dead_letters") == [(0,)]


async def test_the_news_api_pages_filters_and_refuses_as_documented() -> None:
    news_api = BenzingaNewsApi(TOKEN)
    start = utc_now() - timedelta(minutes=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_benzinga_simulator, token=TOKEN, messages_per_second=500,
                                              total_messages=120, start=start, news_api=news_api))  # fmt: skip
        with trio.fail_after(10):
            while len(news_api.articles) < 40:
                await trio.sleep(0.01)
        await trio.sleep(0.5)
        articles = list(news_api.articles.values())
        middle = parsedate_to_datetime(articles[len(articles) // 2]["updated"])
        client = BenzingaNews(news_api.base_url, TOKEN, page_size=7)
        fetched = await client.updated_since(middle)
        assert fetched == [a for a in news_api.articles.values() if parsedate_to_datetime(a["updated"]) >= middle]
        assert len(fetched) > 7 and news_api.requests == -(-len(fetched) // 7) + (len(fetched) % 7 == 0)
        await client.aclose()
        async with httpx.AsyncClient(base_url=news_api.base_url) as http:
            headline = (await http.get("/api/v2/news", params={"token": TOKEN, "displayOutput": "headline"})).json()
            assert len(headline) == 15 and "body" not in headline[0] and "teaser" not in headline[0]
            assert (await http.get("/api/v2/news", params={"token": "wrong"})).status_code == 401
        nursery.cancel_scope.cancel()
