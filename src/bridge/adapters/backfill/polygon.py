"""Polygon/Massive REST: an options contract's trades and quotes in a time window, every page.

``GET /v3/trades/{optionsTicker}`` and ``GET /v3/quotes/{optionsTicker}`` with ``timestamp.gte`` /
``timestamp.lt`` in nanoseconds, ``order=asc``, ``sort=timestamp`` and ``limit`` (50,000 at most);
further pages follow the response's ``next_url`` (a cursor: its path and query, on the configured
base URL). The key goes in ``Authorization: Bearer``, so it is never part of a URL the client logs or
follows. A plan without the endpoint answers
``{"status": "NOT_AUTHORIZED", "message": …}``, which is raised as ``NotEntitled`` with that message.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import attrs
import httpx

from bridge.adapters.backfill.rest import RestFailed, RestGetter

PAGE_LIMIT: Final = 50_000
"""The most results one page may hold (the vendor's maximum for trades and quotes)."""


class TooManyPages(Exception):
    """A window held more pages than allowed: what was fetched is returned in ``results``."""

    def __init__(self, results: list[dict[str, Any]], pages: int) -> None:
        super().__init__(f"stopped after {pages} pages")
        self.results = results


@attrs.define
class PolygonRest:
    base_url: str
    api_key: str
    page_limit: int = PAGE_LIMIT
    max_pages: int = 20
    getter: RestGetter = attrs.field(init=False)
    _client: httpx.AsyncClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        self._client = httpx.AsyncClient(base_url=self.base_url.rstrip("/"), headers=headers, timeout=30.0)
        self.getter = RestGetter(self._client, secret=self.api_key)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def trades(self, ticker: str, gte_ns: int, lt_ns: int) -> list[dict[str, Any]]:
        return await self._window("trades", ticker, gte_ns, lt_ns)

    async def quotes(self, ticker: str, gte_ns: int, lt_ns: int) -> list[dict[str, Any]]:
        return await self._window("quotes", ticker, gte_ns, lt_ns)

    async def _window(self, kind: str, ticker: str, gte_ns: int, lt_ns: int) -> list[dict[str, Any]]:
        params: dict[str, Any] | None = {
            "timestamp.gte": gte_ns, "timestamp.lt": lt_ns, "order": "asc", "sort": "timestamp",
            "limit": self.page_limit,
        }  # fmt: skip
        url = f"/v3/{kind}/{quote(ticker, safe=':')}"
        results: list[dict[str, Any]] = []
        for page in range(1, self.max_pages + 1):
            body = await self.getter.get_json(url, params)
            if not isinstance(body, dict):
                raise RestFailed(f"/v3/{kind}: expected a JSON object, got {type(body).__name__}")
            page_results = body.get("results") or []
            if not isinstance(page_results, list):
                raise RestFailed(f"/v3/{kind}: results is not a list")
            results.extend(item for item in page_results if isinstance(item, dict))
            next_url = body.get("next_url")
            if not isinstance(next_url, str) or not next_url:
                return results
            # the cursor carries the query; the key stays in the header; the host stays the configured one
            url, params = httpx.URL(next_url).raw_path.decode("ascii"), None
            if page == self.max_pages:
                raise TooManyPages(results, page)
        return results  # pragma: no cover - the loop returns or raises
