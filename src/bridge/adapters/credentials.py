"""Access tokens for the broker feeds: a fixed one (``BRIDGE_*_TOKEN``), or one minted from a refresh token
and renewed before it expires.

A feed asks ``get()`` for the token before each use and calls ``refused(token, reason)`` when the vendor
answers 401/403: a fixed token then means "wait and retry later" (``RetryLater``), a refreshing one is
renewed at once and the request retried. ``keep_fresh()`` runs beside the feed and renews the token a
little before it expires, so an idle feed's token, and the expiry metrics, stay current.

The three vendors' token endpoints differ only in shape (see ``docs/credentials.md``):

- tastytrade: ``POST {api}/oauth/token``, JSON ``grant_type``/``refresh_token``/``client_secret`` (and
  ``client_id`` if configured); every request, this one included, needs a ``User-Agent`` of the form
  ``product/version``; access tokens live 15 minutes.
- Schwab: ``POST https://api.schwabapi.com/v1/oauth/token``, a form, HTTP Basic with app key and secret;
  access tokens live 30 minutes, the refresh token 7 days from when it was issued.
- Tradier: ``POST {api}/oauth/refreshtoken``, a form, HTTP Basic with client id and secret.

A refresh token the vendor rotates is written to ``$BRIDGE_HOME/credentials/<feed>.json`` (mode 0600)
so a restart uses the newest one; the file remembers a fingerprint of the configured token, so setting a
new ``BRIDGE_*_REFRESH_TOKEN`` takes precedence over what was kept. Tokens never reach a log message: each
one is registered with the log redactor as soon as it is known.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import attrs
import httpx
import orjson
import trio

from bridge.adapters.feeds.websocket import REJECTED_CREDENTIALS_RETRY_S
from bridge.domain.ports import Clock, RetryLater
from bridge.logs import REDACTOR, get_logger

log = get_logger(__name__, component="credentials")


def _user_agent() -> str:
    try:
        return f"stream-bridge/{version('stream-bridge')}"
    except PackageNotFoundError:
        return "stream-bridge/0"


USER_AGENT: Final = _user_agent()
"""``product/version``: tastytrade refuses requests without a User-Agent of this form (HTTP 401)."""
REFRESH_WARNING: Final = timedelta(days=1)
"""A refresh token closer than this to its expiry is reported (a problem, a warning)."""
MAX_RENEW_MARGIN: Final = timedelta(seconds=60)
RETRY_MAX_S: Final = 60.0
SCHWAB_TOKEN_URL: Final = "https://api.schwabapi.com/v1/oauth/token"
SCHWAB_REFRESH_LIFETIME: Final = timedelta(days=7)


class CredentialStats(Protocol):
    """Where expiry times and credential problems are shown (``PipelineStats`` has both)."""

    credential_expiry: dict[tuple[str, str], datetime]
    credential_problems: dict[str, str]


class Credentials(Protocol):
    """What a broker feed needs of its token, fixed or refreshing."""

    async def get(self) -> str:
        """A token valid now (renewed first if it is about to expire)."""
        ...

    async def refused(self, token: str, reason: str) -> None:
        """The vendor refused ``token``: renew it (return) or raise ``RetryLater`` when that cannot help."""
        ...

    async def keep_fresh(self) -> None:
        """Renew the token before it expires, forever (a fixed token: nothing to do)."""
        ...


class TokenRefused(Exception):
    """The token endpoint refused the refresh token or the client: only an operator can fix it."""


class TokenEndpointUnavailable(Exception):
    """The token endpoint failed in a way worth retrying (5xx, 429, an answer without a token)."""


TRANSIENT: Final = (httpx.TransportError, TokenEndpointUnavailable)
"""The failures of a refresh that are retried (with backoff, while the current token lasts)."""


@attrs.define
class StaticToken:
    """A token from the environment: used as it is; a refusal is final until someone changes it."""

    token: str

    def __attrs_post_init__(self) -> None:
        REDACTOR.add(self.token)

    async def get(self) -> str:
        return self.token

    async def refused(self, token: str, reason: str) -> None:
        raise RetryLater(reason, REJECTED_CREDENTIALS_RETRY_S)

    async def keep_fresh(self) -> None:
        await trio.sleep_forever()


@attrs.frozen
class TokenEndpoint:
    """One vendor's refresh-token grant: where, in which body format, and how the client authenticates."""

    url: str
    client_secret: str
    client_id: str | None = None
    body_format: Literal["json", "form"] = "form"
    basic_auth: bool = True
    """Client id and secret as HTTP Basic (Schwab, Tradier); else in the body (tastytrade)."""
    access_lifetime: timedelta = timedelta(minutes=15)
    """Used when the answer has no ``expires_in``."""
    refresh_lifetime: timedelta | None = None
    """How long a refresh token lives from its issue when the answer does not say (Schwab: 7 days)."""

    def request(self, refresh_token: str) -> dict[str, Any]:
        """The keyword arguments of ``httpx.AsyncClient.post`` for one exchange."""
        body: dict[str, str] = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        auth: tuple[str, str] | None = None
        if self.basic_auth:
            auth = (self.client_id or "", self.client_secret)
        else:
            body["client_secret"] = self.client_secret
            if self.client_id:
                body["client_id"] = self.client_id
        payload: dict[str, Any] = {"json": body} if self.body_format == "json" else {"data": body}
        return {**payload, "auth": auth} if auth is not None else payload


@attrs.frozen
class Grant:
    access_token: str = attrs.field(repr=False)
    issued_at: datetime
    access_expires_at: datetime
    refresh_token: str = attrs.field(repr=False)
    refresh_expires_at: datetime | None


@attrs.frozen
class CredentialExpiry:
    """When each credential of a broker expires (``refresh`` is ``None`` when the vendor does not say)."""

    access: datetime
    refresh: datetime | None


@attrs.frozen
class TokenStore:
    """Rotated refresh tokens kept across restarts: one JSON file per feed, mode 0600, in a 0700 directory."""

    directory: Path

    def path(self, feed: str) -> Path:
        return self.directory / f"{feed}.json"

    def load(self, feed: str, seed: str) -> tuple[str, datetime | None] | None:
        """The kept refresh token and its issue time, if one was kept for the configured token ``seed``."""
        try:
            entry = orjson.loads(self.path(feed).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("kept refresh token unreadable; using the configured one", feed=feed, error=str(exc))
            return None
        if not isinstance(entry, dict) or entry.get("seed") != seed or not isinstance(entry.get("refresh_token"), str):
            return None
        issued = entry.get("issued_at")
        return entry["refresh_token"], datetime.fromisoformat(issued) if isinstance(issued, str) else None

    def save(self, feed: str, seed: str, refresh_token: str, issued_at: datetime) -> None:
        """Write atomically (a crash leaves the old file or the new one) with owner-only permissions."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path(feed)
        temporary = target.with_suffix(".tmp")
        text = orjson.dumps({"seed": seed, "refresh_token": refresh_token, "issued_at": issued_at.isoformat()})
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, text)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)


def _seed(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def _reason(response: httpx.Response) -> str:
    """The vendor's error code (never the body's other text, which could echo what was sent)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, dict):
        code = code.get("code")
    return f"HTTP {response.status_code}: {code}" if isinstance(code, str) else f"HTTP {response.status_code}"


@attrs.define
class RefreshingToken:
    """An access token minted from a refresh token, renewed before it expires and at once after a refusal."""

    feed: str
    endpoint: TokenEndpoint
    refresh_token: str = attrs.field(repr=False)
    """The configured refresh token (a kept, rotated one takes its place while its fingerprint matches)."""
    clock: Clock
    store: TokenStore | None = None
    stats: CredentialStats | None = None
    headers: Mapping[str, str] = attrs.Factory(lambda: {"User-Agent": USER_AGENT, "Accept": "application/json"})
    transport: httpx.AsyncBaseTransport | None = None
    """For tests: where the token requests go instead of the network."""
    _grant: Grant | None = attrs.field(default=None, init=False)
    _current_refresh: str | None = attrs.field(default=None, init=False, repr=False)
    _refresh_issued_at: datetime | None = attrs.field(default=None, init=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    _loaded: bool = attrs.field(default=False, init=False)
    """The store was read (once, at the first exchange)."""
    _kept: bool = attrs.field(default=False, init=False)
    """The store holds the refresh token in use."""

    def __attrs_post_init__(self) -> None:
        REDACTOR.add(self.refresh_token)
        REDACTOR.add(self.endpoint.client_secret)

    @property
    def grant(self) -> Grant | None:
        return self._grant

    async def get(self) -> str:
        grant = self._grant
        if grant is None or self._due(grant):
            grant = await self._renew(grant, fallback=True)
        return grant.access_token

    async def refused(self, token: str, reason: str) -> None:
        grant = self._grant
        if grant is not None and grant.access_token != token:
            return  # renewed since that request was sent
        log.info("access token refused; renewing it", feed=self.feed, reason=reason)
        await self._renew(grant, force=True)

    async def keep_fresh(self) -> None:
        delay = 1.0
        while True:
            grant = self._grant
            if grant is not None:
                wait = (grant.access_expires_at - self._margin(grant) - self.clock()).total_seconds()
                if wait > 0:
                    await trio.sleep(wait)
                    continue
            try:
                await self._renew(grant)
            except TRANSIENT:
                await trio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
            else:
                delay = 1.0

    async def mint(self) -> CredentialExpiry:
        """Exchange the refresh token now; when each credential expires (raises ``RetryLater`` if refused)."""
        grant = await self._renew(self._grant, force=True)
        return CredentialExpiry(grant.access_expires_at, grant.refresh_expires_at)

    @staticmethod
    def _margin(grant: Grant) -> timedelta:
        """Renew a third of the lifetime early, at most a minute: time for a slow endpoint, a busy process."""
        return min(MAX_RENEW_MARGIN, (grant.access_expires_at - grant.issued_at) / 3)

    def _due(self, grant: Grant) -> bool:
        return self.clock() >= grant.access_expires_at - self._margin(grant)

    async def _renew(self, stale: Grant | None, *, force: bool = False, fallback: bool = False) -> Grant:
        async with self._lock:
            current = self._grant
            if current is not None and current is not stale:
                return current  # another task renewed it while this one waited
            if current is not None and not force and not self._due(current):
                return current
            try:
                grant = await self._exchange()
            except TokenRefused as exc:
                self._problem(f"the token endpoint refused the refresh token ({exc})")
                raise RetryLater(
                    f"{self.feed}: the token endpoint refused the refresh token ({exc}); mint a new one",
                    REJECTED_CREDENTIALS_RETRY_S,
                ) from None
            except TRANSIENT as exc:
                self._problem(f"renewing the access token failed ({type(exc).__name__}: {exc})")
                if fallback and current is not None and self.clock() < current.access_expires_at:
                    return current  # still valid: keep_fresh retries
                raise
            self._grant = grant
            self._record(grant)
            return grant

    async def _exchange(self) -> Grant:
        refresh = await self._refresh_token()
        # shielded: a vendor that rotates refresh tokens revokes the old one when it answers, so a shutdown
        # between its answer and the token being kept would leave a restart with a dead token (15 s at most)
        with trio.CancelScope(shield=True):
            grant = await self._exchange_with(refresh)
        return grant

    async def _exchange_with(self, refresh: str) -> Grant:
        async with httpx.AsyncClient(timeout=15, headers=dict(self.headers), transport=self.transport) as client:
            response = await client.post(self.endpoint.url, **self.endpoint.request(refresh))
        if response.status_code in (400, 401, 403):
            raise TokenRefused(_reason(response))
        if response.status_code >= 300:
            raise TokenEndpointUnavailable(_reason(response))
        try:
            body = response.json()
            access = body["access_token"]
            lifetime = body.get("expires_in")
            lifetime = self.endpoint.access_lifetime if lifetime is None else timedelta(seconds=float(lifetime))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenEndpointUnavailable("the answer has no access_token and expires_in") from None
        if not isinstance(access, str) or not access:
            raise TokenEndpointUnavailable("the answer's access_token is not a string")
        REDACTOR.add(access)
        now = self.clock()
        given = body.get("refresh_token")
        rotated = isinstance(given, str) and bool(given) and given != refresh
        if rotated:
            assert isinstance(given, str)
            REDACTOR.add(given)
            self._current_refresh, self._refresh_issued_at = given, now
            log.info("refresh token rotated by the vendor; kept for restarts", feed=self.feed)
        if self._refresh_issued_at is None:
            self._refresh_issued_at = now  # first sight of the configured token: its age is unknown
        if rotated or (self.store is not None and not self._kept):
            await self._keep()
        refresh_expires: datetime | None = None
        if isinstance(body.get("refresh_token_expires_in"), int | float):
            refresh_expires = now + timedelta(seconds=float(body["refresh_token_expires_in"]))
        elif self.endpoint.refresh_lifetime is not None:
            refresh_expires = self._refresh_issued_at + self.endpoint.refresh_lifetime
        log.info("access token renewed", feed=self.feed, expires_at=(now + lifetime).isoformat())
        current = self._current_refresh or refresh
        return Grant(access, now, now + lifetime, current, refresh_expires)

    async def _refresh_token(self) -> str:
        if not self._loaded:
            self._loaded = True
            if self.store is not None:
                kept = await trio.to_thread.run_sync(self.store.load, self.feed, _seed(self.refresh_token))
                if kept is not None:
                    REDACTOR.add(kept[0])
                    self._current_refresh, self._refresh_issued_at = kept
                    self._kept = True
        return self._current_refresh or self.refresh_token

    async def _keep(self) -> None:
        if self.store is None:
            return
        token = self._current_refresh or self.refresh_token
        issued = self._refresh_issued_at or self.clock()
        try:
            await trio.to_thread.run_sync(self.store.save, self.feed, _seed(self.refresh_token), token, issued)
            self._kept = True
        except OSError as exc:
            self._problem(f"the rotated refresh token could not be kept ({exc}); a restart would use the old one")

    def _problem(self, problem: str) -> None:
        log.warning("credential problem", feed=self.feed, problem=problem)
        if self.stats is not None:
            self.stats.credential_problems[self.feed] = problem

    def _record(self, grant: Grant) -> None:
        if self.stats is not None:
            self.stats.credential_expiry[(self.feed, "access")] = grant.access_expires_at
            if grant.refresh_expires_at is not None:
                self.stats.credential_expiry[(self.feed, "refresh")] = grant.refresh_expires_at
        expires = grant.refresh_expires_at
        if expires is not None and expires - self.clock() < REFRESH_WARNING:
            hours = max((expires - self.clock()).total_seconds(), 0) / 3600
            self._problem(f"the refresh token expires at {expires.isoformat()} (in {hours:.1f} h); mint a new one")
        elif self.stats is not None:
            self.stats.credential_problems.pop(self.feed, None)


def bind_stats(credentials: Credentials, *candidates: object) -> None:
    """Give a refreshing token the first of ``candidates`` that can show expiry (``CredentialStats``).

    Feeds pass their own ``stats`` first, then the sink they run into: the pipeline's and the
    recorder's sinks carry the process's stats, so expiry is shown however the feed was built.
    """
    if not isinstance(credentials, RefreshingToken) or credentials.stats is not None:
        return
    for candidate in candidates:
        found = getattr(candidate, "stats", candidate)
        if hasattr(found, "credential_expiry") and hasattr(found, "credential_problems"):
            credentials.stats = found
            return


def _store(home: Path | None) -> TokenStore | None:
    return None if home is None else TokenStore(home / "credentials")


def tastytrade_credentials(
    *,
    api_url: str,
    client_secret: str,
    refresh_token: str,
    clock: Clock,
    client_id: str | None = None,
    home: Path | None = None,
    stats: CredentialStats | None = None,
    feed: str = "tastytrade",
) -> RefreshingToken:
    endpoint = TokenEndpoint(f"{api_url.rstrip('/')}/oauth/token", client_secret, client_id, "json", basic_auth=False,
                             access_lifetime=timedelta(minutes=15))  # fmt: skip
    return RefreshingToken(feed, endpoint, refresh_token, clock, _store(home), stats)


def schwab_credentials(
    *,
    app_key: str,
    app_secret: str,
    refresh_token: str,
    clock: Clock,
    token_url: str = SCHWAB_TOKEN_URL,
    home: Path | None = None,
    stats: CredentialStats | None = None,
    feed: str = "schwab",
) -> RefreshingToken:
    lifetime = timedelta(minutes=30)
    endpoint = TokenEndpoint(token_url, app_secret, app_key, "form", True, lifetime, SCHWAB_REFRESH_LIFETIME)
    return RefreshingToken(feed, endpoint, refresh_token, clock, _store(home), stats)


def tradier_credentials(
    *,
    api_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    clock: Clock,
    home: Path | None = None,
    stats: CredentialStats | None = None,
    feed: str = "tradier",
) -> RefreshingToken:
    endpoint = TokenEndpoint(f"{api_url.rstrip('/')}/oauth/refreshtoken", client_secret, client_id, "form",
                             basic_auth=True, access_lifetime=timedelta(hours=24))  # fmt: skip
    return RefreshingToken(feed, endpoint, refresh_token, clock, _store(home), stats)


async def check_tastytrade_credentials(**settings: Any) -> CredentialExpiry:
    """For ``bridge check``: mint a tastytrade token now; when it and the refresh token expire.

    Takes ``tastytrade_credentials``' keywords. Raises ``RetryLater`` (refused) or a ``TRANSIENT`` error.
    A rotated refresh token is kept (with ``home``) exactly as the running feed would keep it.
    """
    return await tastytrade_credentials(**settings).mint()


async def check_schwab_credentials(**settings: Any) -> CredentialExpiry:
    """For ``bridge check``: as ``check_tastytrade_credentials``, with ``schwab_credentials``' keywords."""
    return await schwab_credentials(**settings).mint()


async def check_tradier_credentials(**settings: Any) -> CredentialExpiry:
    """For ``bridge check``: as ``check_tastytrade_credentials``, with ``tradier_credentials``' keywords."""
    return await tradier_credentials(**settings).mint()
