"""What the broker simulators share: an HTTP server that reads request bodies and query strings (token
endpoints post forms or JSON), and an OAuth token issuer with short, configurable lifetimes.

The issuer hands out access tokens that expire after ``access_lifetime_s`` of trio's clock, refuses
unknown or expired ones, and can rotate the refresh token on every exchange (the old one then stops
working), so tests can prove that a feed renews its token in time, after a refusal, and keeps a rotated
refresh token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal
from urllib.parse import parse_qs

import attrs
import h11
import trio

REQUEST_DEADLINE_S: Final = 10.0
MAX_BODY_BYTES: Final = 1 << 20


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes = b""

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body (first value of each field)."""
        return {key: values[0] for key, values in parse_qs(self.body.decode("latin-1")).items()}


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


Route = Callable[[Request], Awaitable[Response]]


async def _handle(routes: Mapping[str, Route], stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
    request: h11.Request | None = None
    body = bytearray()
    with trio.move_on_after(REQUEST_DEADLINE_S):
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(16 * 1024)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    await _respond(routes, connection, stream, request, bytes(body))
                    return
                else:
                    return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()


async def _respond(
    routes: Mapping[str, Route], connection: h11.Connection, stream: trio.SocketStream, event: h11.Request, body: bytes
) -> None:
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    route = routes.get(path)
    if route is None:
        response = Response(404, b'{"error": "not found"}')
    else:
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
        params = {key: values[0] for key, values in parse_qs(query).items()}
        response = await route(Request(event.method.decode(), path, params, headers, body))
    headers_out = [("content-type", response.content_type), ("content-length", str(len(response.body))),
                   ("connection", "close")]  # fmt: skip
    await stream.send_all(connection.send(h11.Response(status_code=response.status, headers=headers_out)))
    await stream.send_all(connection.send(h11.Data(data=response.body)))
    await stream.send_all(connection.send(h11.EndOfMessage()))


async def serve_rest(
    routes: Mapping[str, Route],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``host``:``port`` (0 picks a free one) until cancelled; ``task_status.started`` gets
    the port. A port that cannot be bound raises ``OSError`` whose ``filename`` is ``host:port``."""
    async with trio.open_nursery() as nursery:
        try:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, functools.partial(_handle, routes), port,
                                                              host=host))  # fmt: skip
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from exc
        task_status.started(listeners[0].socket.getsockname()[1])


Verdict = Literal["valid", "expired", "unknown"]


@attrs.define
class TokenIssuer:
    """Access and refresh tokens of one simulated vendor, timed on trio's clock."""

    access_lifetime_s: float = 900.0
    rotate_refresh: bool = False
    refresh_lifetime_s: float | None = None
    prefix: str = "sim"
    static: frozenset[str] = frozenset()
    """Access tokens that never expire (a test's or the demo's fixed ``*_TOKEN``)."""
    _access: dict[str, float] = attrs.field(factory=dict, init=False)
    _refresh: dict[str, float | None] = attrs.field(factory=dict, init=False)
    _serial: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    issued: int = attrs.field(default=0, init=False)
    refused_expired: int = attrs.field(default=0, init=False)

    def add_refresh_token(self, token: str) -> None:
        lifetime = self.refresh_lifetime_s
        self._refresh[token] = None if lifetime is None else trio.current_time() + lifetime

    def check(self, access_token: str | None) -> Verdict:
        if access_token is None:
            return "unknown"
        token = access_token[7:] if access_token.lower().startswith("bearer ") else access_token
        if token in self.static:
            return "valid"
        expires = self._access.get(token)
        if expires is None:
            return "unknown"
        if trio.current_time() >= expires:
            self.refused_expired += 1
            return "expired"
        return "valid"

    def exchange(self, refresh_token: str | None) -> dict[str, object] | None:
        """A token response for a valid refresh token (rotating it if configured), else ``None``."""
        if refresh_token is None or refresh_token not in self._refresh:
            return None
        refresh_expires = self._refresh[refresh_token]
        if refresh_expires is not None and trio.current_time() >= refresh_expires:
            return None
        access = f"{self.prefix}-access-{next(self._serial)}-{secrets.token_hex(4)}"
        self._access[access] = trio.current_time() + self.access_lifetime_s
        self.issued += 1
        if self.rotate_refresh:
            del self._refresh[refresh_token]
            refresh_token = f"{self.prefix}-refresh-{next(self._serial)}-{secrets.token_hex(4)}"
            self.add_refresh_token(refresh_token)
        return {"access_token": access, "token_type": "Bearer", "expires_in": self.access_lifetime_s,
                "refresh_token": refresh_token}  # fmt: skip

    def revoke(self) -> None:
        """Every access token issued so far stops working (as when a vendor invalidates sessions early)."""
        self._access.clear()

    @property
    def refresh_tokens(self) -> tuple[str, ...]:
        return tuple(self._refresh)


USER_AGENT_FORM: Final = re.compile(r"^[^\s/]+/[^\s/]+")


def has_product_user_agent(request: Request) -> bool:
    """tastytrade's rule: a ``User-Agent`` of the form ``product/version``."""
    return USER_AGENT_FORM.match(request.headers.get("user-agent", "")) is not None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """``Authorization: Basic`` user and password, if the request has them."""
    value = request.headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password
