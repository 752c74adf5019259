"""Benzinga news REST: every article updated since a time (``GET /api/v2/news``), all pages.

Parameters as the vendor documents them: ``token`` (the key, a query parameter as on the stream),
``updatedSince`` (Unix seconds, UTC), ``pageSize`` (at most 100), ``page`` (from 0),
``displayOutput=full`` (the body too), ``sort=updated:asc``; ``Accept: application/json`` (the API
answers XML otherwise). The answer is a JSON array of articles; a page shorter than ``pageSize`` is
the last.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import attrs
import httpx

from bridge.adapters.backfill.rest import RestFailed, RestGetter

PAGE_SIZE: Final = 100


@attrs.define
class BenzingaNews:
    base_url: str
    token: str
    page_size: int = PAGE_SIZE
    max_pages: int = 50
    getter: RestGetter = attrs.field(init=False)
    _client: httpx.AsyncClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"), headers={"Accept": "application/json"}, timeout=30.0
        )
        self.getter = RestGetter(self._client, secret=self.token)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def updated_since(self, since: datetime) -> list[dict[str, Any]]:
        articles: list[dict[str, Any]] = []
        for page in range(self.max_pages):
            params = {
                "token": self.token, "updatedSince": int(since.timestamp()), "pageSize": self.page_size,
                "page": page, "displayOutput": "full", "sort": "updated:asc",
            }  # fmt: skip
            body = await self.getter.get_json("/api/v2/news", params)
            if not isinstance(body, list):
                raise RestFailed(f"/api/v2/news: expected a JSON array, got {type(body).__name__}")
            articles.extend(item for item in body if isinstance(item, dict))
            if len(body) < self.page_size:
                return articles
        raise RestFailed(f"/api/v2/news: more than {self.max_pages} pages of {self.page_size}")
