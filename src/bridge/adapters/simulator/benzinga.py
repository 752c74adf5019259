"""A local Benzinga news stream: token in the query, one JSON object per message, both documented shapes.

Articles are created, later updated (sometimes with a new headline) or removed, and now and then sent
twice, as a reconnecting upstream does. Bodies carry HTML and non-ASCII text; some articles have no
tickers. A wrong token is refused with HTTP 401, a second connection for the same token with 429.
The scenario is deterministic and shared by all connections, so a reconnecting client resumes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Final

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from bridge.adapters.simulator.server import SentLog, bearer_token, serve_loopback

TICKERS: Final = ("AAPL", "MSFT", "NVDA", "TSLA", "SPY", "QQQ", "NSRGY", "TM", "BABA", "SAP")
CHANNELS: Final = ("News", "Earnings", "Analyst Ratings", "Options", "M&A", "Markets", "Global")
HEADLINES: Final = (
    "{t} beats estimates; shares jump {n}% after hours",
    "{t} announces €{n}bn buyback — Zürich desk reacts",
    "Analyst upgrades {t} to Buy, target ${n}0",
    "{t} falls as guidance disappoints: “we are cautious”",
    "Unusual options activity in {t}: {n}k calls traded",
    "Market wrap: stocks mixed, yen weakens — 日経平均 {n}00",
)


class BenzingaScenario:
    """An endless deterministic news session, alternating the v1 and newer message shapes."""

    def __init__(self, seed: int = 0, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.now = (start or datetime(2026, 11, 20, 14, 30, tzinfo=UTC)).astimezone(UTC)
        self.article_ids = itertools.count(40_000_000)
        self.published: list[dict[str, Any]] = []  # articles that may still be updated or removed

    def messages(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        while True:
            self.now += timedelta(milliseconds=rng.randint(50, 3000))
            roll = rng.random()
            if roll < 0.7 or not self.published:
                article = self._new_article()
                self.published.append(article)
                yield self._message("created", article)
            elif roll < 0.85:
                article = rng.choice(self.published)
                article["revision"] += 1
                if rng.random() < 0.3:
                    article["title"] += " (updated)"
                article["body"] += f"<p>Update {article['revision']}.</p>"
                yield self._message("updated", article)
            elif roll < 0.93:
                article = self.published.pop(rng.randrange(len(self.published)))
                yield self._message("removed", article)
            else:
                yield self._message("updated", rng.choice(self.published))  # a repeat: same revision again

    def _new_article(self) -> dict[str, Any]:
        rng = self.rng
        tickers = rng.sample(TICKERS, k=rng.choice((0, 1, 1, 2, 3)))
        title = rng.choice(HEADLINES).format(t=tickers[0] if tickers else "Wall Street", n=rng.randint(2, 99))
        return {
            "id": next(self.article_ids),
            "revision": 1,
            "published": self.now,
            "title": title,
            "body": f"<p>{title}.</p><p>Détails &amp; analyse — ¥{rng.randint(1, 999)}</p>",
            "tickers": tickers,
            "channels": rng.sample(CHANNELS, k=rng.randint(0, 2)),
            "shape": "v1" if rng.random() < 0.5 else "newer",
        }

    def _message(self, action: str, article: dict[str, Any]) -> dict[str, Any]:
        if article["shape"] == "v1":
            content = {
                "id": article["id"], "revision_id": article["revision"], "type": "story",
                "created_at": article["published"].isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "updated_at": self.now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "title": article["title"], "body": article["body"], "teaser": "", "authors": [{"name": "Benzinga"}],
                "url": f"https://www.benzinga.com/news/{article['id']}", "channels": list(article["channels"]),
                "securities": [{"symbol": t, "exchange": "NASDAQ", "primary": True} for t in article["tickers"]],
            }  # fmt: skip
            return {"api_version": "websocket/v1", "kind": "News/v1",
                    "data": {"id": self.rng.randint(1, 2**31), "action": action.capitalize(),
                             "timestamp": self.now.isoformat().replace("+00:00", "Z"), "content": content}}  # fmt: skip
        content = {
            "id": article["id"], "author": "Benzinga Insights",
            "created": format_datetime(article["published"]), "updated": format_datetime(self.now),
            "title": article["title"], "body": article["body"], "url": f"https://www.benzinga.com/x/{article['id']}",
            "channels": [{"name": c} for c in article["channels"]], "stocks": [{"name": t} for t in article["tickers"]],
        }  # fmt: skip
        return {"id": f"{self.rng.getrandbits(128):032x}", "api_version": "websocket/v1", "kind": "news",
                "data": {"action": "deleted" if action == "removed" else action, "id": article["id"],
                         "timestamp": self.now.isoformat().replace("+00:00", "Z"), "content": content}}  # fmt: skip


async def serve_benzinga_simulator(
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    messages_per_second: float | None = 20,
    total_messages: int | None = None,
    disconnect_every_frames: int | None = None,
    bad_frame_every: int | None = None,
    seed: int = 0,
    start: datetime | None = None,
    log: SentLog | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the ``ws://…/api/v1/news/stream`` URL.

    ``log`` counts each good message as one ``news_events`` message (keep them to reconcile articles).
    """
    sent = log if log is not None else SentLog()
    messages = BenzingaScenario(seed, start).messages()
    counter = itertools.count(1)
    connected = [0]

    async def handler(request: WebSocketRequest) -> None:
        if bearer_token(request) != token:
            await request.reject(401, body=b"Unauthorized. Missing or Invalid key.")
            return
        if connected[0]:
            await request.reject(429, body=b"Too Many Connections.")
            return
        ws = await request.accept()
        connected[0] += 1
        sent.connections += 1
        frames_here = 0
        try:
            while disconnect_every_frames is None or frames_here < disconnect_every_frames:
                if total_messages is not None and sent.messages_sent >= total_messages:
                    await trio.sleep_forever()
                if messages_per_second is not None:
                    await trio.sleep(1 / messages_per_second)
                else:
                    await trio.lowlevel.checkpoint()
                n = next(counter)
                if bad_frame_every and n % bad_frame_every == 0:
                    await ws.send_message('{"api_version": "websocket/v1", "data": {"action": "Created", "content": ')
                    sent.record_bad("invalid_json")
                else:
                    message = next(messages)
                    await ws.send_message(orjson.dumps(message).decode())
                    sent.record_good([message], {"news_events": 1})
                frames_here += 1
            await ws.aclose(code=1001, reason="simulated disconnect")
        except ConnectionClosed:
            pass
        finally:
            connected[0] -= 1

    await serve_loopback(handler, host=host, port=port, path="/api/v1/news/stream", task_status=task_status)


__all__ = ["BenzingaScenario", "SentLog", "serve_benzinga_simulator"]
