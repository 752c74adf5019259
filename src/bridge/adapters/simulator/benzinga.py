"""A local Benzinga news stream: token in the query, one JSON object per message, both documented shapes.

Articles are created, later updated (sometimes with a new headline) or removed, and now and then sent
twice, as a reconnecting upstream does. Bodies carry HTML and non-ASCII text; some articles have no
tickers. A wrong token is refused with HTTP 401, a second connection for the same token with 429.
The scenario is deterministic and published on the server's schedule, connected or not: a client
that reconnects gets what is published from then on, and what it missed only by asking for a
``replay`` of the last 100 messages (the news stream's documented action).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Final

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from bridge.adapters.simulator.oauth import Request, Response, serve_rest
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


@attrs.define
class BenzingaNewsApi:
    """The REST side of the simulated newsroom: ``GET /api/v2/news`` over every article's latest state.

    ``token``, ``updatedSince`` (Unix seconds), ``pageSize`` (1-100, default 15), ``page`` (from 0),
    ``displayOutput`` (``full``, ``abstract``: no body, ``headline``: no body nor teaser), answered as a
    JSON array ordered by update time. Removed articles are not listed. ``entitled=False`` answers 401
    as a key without the news API does; ``rate_limited_requests`` answers the next N with 429.
    """

    token: str
    base_url: str = ""
    entitled: bool = True
    rate_limited_requests: int = 0
    requests: int = 0
    articles: dict[int, dict[str, Any]] = attrs.Factory(dict)

    def record(self, message: dict[str, Any]) -> None:
        data = message["data"]
        content = data["content"]
        article_id = content["id"]
        if data["action"].lower() in ("removed", "deleted"):
            self.articles.pop(article_id, None)
            return
        created = content.get("created") or format_datetime(datetime.fromisoformat(content["created_at"]))
        updated = content.get("updated") or format_datetime(datetime.fromisoformat(content["updated_at"]))
        stocks = content.get("stocks") or [{"name": s["symbol"]} for s in content.get("securities", [])]
        channels = [c if isinstance(c, dict) else {"name": c} for c in content.get("channels", [])]
        self.articles.pop(article_id, None)  # re-inserted last: the dict stays in update order
        self.articles[article_id] = {
            "id": article_id, "author": content.get("author", "Benzinga"), "created": created, "updated": updated,
            "title": content["title"], "teaser": content.get("teaser", ""), "body": content["body"],
            "url": content.get("url", ""), "image": [], "channels": channels, "stocks": stocks, "tags": [],
        }  # fmt: skip

    async def news(self, request: Request) -> Response:
        self.requests += 1
        if request.query.get("token") != self.token or not self.entitled:
            return Response(401, b'{"message": "Unauthorized. Missing or Invalid key."}')
        if self.rate_limited_requests > 0:
            self.rate_limited_requests -= 1
            return Response(429, b'{"message": "Too Many Requests"}')
        try:
            since = int(request.query.get("updatedSince", "0"))
            size = int(request.query.get("pageSize", "15"))
            page = int(request.query.get("page", "0"))
            if not 1 <= size <= 100 or page < 0:
                raise ValueError
        except ValueError:
            return Response(400, b'{"message": "invalid parameters"}')
        output = request.query.get("displayOutput", "full")
        matching = [a for a in self.articles.values() if parsedate_to_datetime(a["updated"]).timestamp() >= since]
        shown = []
        for article in matching[page * size : (page + 1) * size]:
            article = dict(article)
            if output in ("abstract", "headline"):
                article.pop("body")
            if output == "headline":
                article.pop("teaser")
            shown.append(article)
        return Response(200, orjson.dumps(shown))


BAD_FRAME: Final = '{"api_version": "websocket/v1", "data": {"action": "Created", "content": '
REPLAY_SIZE: Final = 100


@attrs.define
class _Client:
    """The one connection a token may have, and the lock that keeps its messages in order."""

    ws: WebSocketConnection
    lock: trio.Lock = attrs.Factory(trio.Lock)
    live_frames: int = 0

    async def send(self, texts: list[str]) -> int:
        """Send ``texts`` back to back (a replay is not interleaved with live news); how many went out."""
        done = 0
        async with self.lock:
            try:
                for text in texts:
                    await self.ws.send_message(text)
                    done += 1
            except ConnectionClosed:
                pass
        return done


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
    replay_size: int = REPLAY_SIZE,
    accepts_actions: bool = True,
    news_api: BenzingaNewsApi | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the ``ws://…/api/v1/news/stream`` URL.

    News is published on the server's own schedule, as a real newsroom's: at ``messages_per_second``
    whether or not a client is connected (``None``: as fast as a connected client takes it, and not
    while none is). The last ``replay_size`` messages are kept and sent again only when the client
    asks with the text action ``replay``; ``ping`` is answered ``pong``. With ``accepts_actions``
    false the server behaves as the v1 spec says, closing the connection on any text message.
    ``total_messages`` bounds the good messages published; ``disconnect_every_frames`` closes a
    connection after that many live frames (replayed ones do not count).

    ``log`` counts each good message handed to a socket (live or replayed) as one ``news_events``
    message; ``extra`` has ``published``, ``published_while_disconnected``, ``replays``, ``replayed``
    and ``text_refused``. Given ``news_api``, every published message updates it and it is served on
    a side port (``news_api.base_url``).
    """
    sent = log if log is not None else SentLog()
    messages = BenzingaScenario(seed, start).messages()
    recent: deque[tuple[dict[str, Any], str]] = deque(maxlen=replay_size)
    current: list[_Client | None] = [None]
    someone = [trio.Event()]

    def leave(client: _Client) -> None:
        if current[0] is client:
            current[0] = None
            someone[0] = trio.Event()

    async def publish() -> None:
        counter = itertools.count(1)
        published = 0
        while total_messages is None or published < total_messages:
            if messages_per_second is not None:
                await trio.sleep(1 / messages_per_second)
            else:
                await someone[0].wait()
                await trio.lowlevel.checkpoint()
            message: dict[str, Any] | None = None
            if bad_frame_every and next(counter) % bad_frame_every == 0:
                text = BAD_FRAME
            else:
                message = next(messages)
                if news_api is not None:
                    news_api.record(message)
                text = orjson.dumps(message).decode()
                recent.append((message, text))
                published += 1
            client = current[0]
            delivered = client is not None and await client.send([text])
            if message is not None:  # counted once its fate is known, so a test waiting for it sees both
                sent.extra["published"] += 1
            if client is None or not delivered:
                sent.extra["published_while_disconnected"] += message is not None
                continue
            if message is None:
                sent.record_bad("invalid_json", text)
            else:
                sent.record_good([message], {"news_events": 1})
            client.live_frames += 1
            if disconnect_every_frames is not None and client.live_frames >= disconnect_every_frames:
                leave(client)  # before closing: the client may reconnect before this task runs again
                async with client.lock:
                    with contextlib.suppress(ConnectionClosed):
                        await client.ws.aclose(code=1001, reason="simulated disconnect")

    async def replay(client: _Client) -> None:
        batch = list(recent)
        done = await client.send([text for _, text in batch])
        for message, _ in batch[:done]:
            sent.record_good([message], {"news_events": 1})
        sent.extra["replayed"] += done
        sent.extra["replays"] += 1  # counted once answered, so a test can wait for the answer

    async def handler(request: WebSocketRequest) -> None:
        if bearer_token(request) != token:
            await request.reject(401, body=b"Unauthorized. Missing or Invalid key.")
            return
        if current[0] is not None:
            await request.reject(429, body=b"Too Many Connections.")
            return
        client = _Client(await request.accept())
        current[0] = client
        someone[0].set()
        sent.connections += 1
        try:
            while True:
                action = await client.ws.get_message()
                if not accepts_actions:
                    sent.extra["text_refused"] += 1
                    leave(client)
                    await client.ws.aclose(code=1008, reason="text messages are not accepted")
                    return
                command = action.strip().lower() if isinstance(action, str) else ""
                if command == "ping":
                    await client.send(["pong"])
                elif command == "replay":
                    await replay(client)
        except ConnectionClosed:
            pass
        finally:
            leave(client)

    async with trio.open_nursery() as nursery:
        if news_api is not None:
            rest_port = await nursery.start(functools.partial(serve_rest, {"/api/v2/news": news_api.news}, host=host))
            news_api.base_url = f"http://{host}:{rest_port}"
        nursery.start_soon(publish)
        url = await nursery.start(
            functools.partial(serve_loopback, handler, host=host, port=port, path="/api/v1/news/stream")
        )
        task_status.started(url)


__all__ = ["BenzingaNewsApi", "BenzingaScenario", "SentLog", "serve_benzinga_simulator"]
