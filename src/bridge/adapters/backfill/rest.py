"""What the backfill REST clients share: one GET with 429 back-off, and the refusals a retry cannot fix."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Final

import attrs
import httpx
import trio

from bridge.domain.policies import BackoffPolicy
from bridge.logs import get_logger

log = get_logger(__name__, component="backfill")

RATE_LIMIT_BACKOFF: Final = BackoffPolicy(initial_s=1.0, max_s=60.0)
RATE_LIMIT_TRIES: Final = 8
TIMEOUT_S: Final = 30.0


class NotEntitled(Exception):
    """The plan does not include this endpoint (Polygon's ``NOT_AUTHORIZED``): retrying cannot help."""


class RestFailed(Exception):
    """The REST API failed for another reason (refused key, a server error, the network, rate limit for good)."""


@attrs.define
class RestGetter:
    """GETs JSON, waiting out HTTP 429 (``Retry-After`` when given, else a growing back-off)."""

    client: httpx.AsyncClient
    backoff: BackoffPolicy = RATE_LIMIT_BACKOFF
    tries: int = RATE_LIMIT_TRIES
    secret: str | None = None
    """Masked in every message (a key that travels in the query string may appear in an error's text)."""
    rate_limited: int = 0

    async def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        for attempt in range(1, self.tries + 1):
            try:
                response = await self.client.get(url, params=params)
            except httpx.HTTPError as exc:
                raise RestFailed(self._masked(f"cannot reach the REST API: {type(exc).__name__}: {exc}")) from None
            if response.status_code == 429:
                self.rate_limited += 1
                wait = _retry_after(response) or self.backoff.delay(attempt - 1, random.random)
                log.warning("rate limited by the REST API, waiting", wait_s=round(wait, 2), attempt=attempt)
                await trio.sleep(wait)
                continue
            body = _json(response)
            if isinstance(body, dict) and body.get("status") == "NOT_AUTHORIZED":
                raise NotEntitled(self._masked(str(body.get("message") or "NOT_AUTHORIZED")))
            if response.status_code >= 400:
                detail = body.get("error") or body.get("message") if isinstance(body, dict) else None
                raise RestFailed(self._masked(f"HTTP {response.status_code}" + (f": {detail}" if detail else "")))
            return body
        raise RestFailed(f"still rate limited (HTTP 429) after {self.tries} tries")


    def _masked(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
