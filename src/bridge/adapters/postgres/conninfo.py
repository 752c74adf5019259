"""Connection strings in messages: always redacted, always one line.

A database URL carries the password, and operators paste error messages into tickets and chats, so
nothing that prints a connection string or a connection error may show it. Masking is structural
(the userinfo of a URL, the secret keys of a ``key=value`` string) and errs on the side of hiding
too much: a password with an unencoded ``@``, ``/``, ``?`` or ``#`` is still masked whole.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MASK: Final = "***"
_SECRET_KEY: Final = r"[a-z_-]*(?:password|passwd|secret|token|key)[a-z_-]*"
"""libpq's ``password`` and ``sslpassword``, and anything token-like a proxy or pooler might take."""
_URI_SECRET_PARAM: Final = re.compile(rf"(?i)([?&]{_SECRET_KEY}=)([^&#]*)")
_KEYWORD_SECRET: Final = re.compile(rf"(?i)(\b{_SECRET_KEY}\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
_MALFORMED_KEYWORD_SECRET: Final = re.compile(
    rf"(?i)(\b{_SECRET_KEY}\s*=\s*)('(?:[^'\\]|\\.)*'?|.*?(?=\s+[a-z_]+\s*=|\s*$))"
)
"""In a string libpq cannot parse, an unquoted secret may hold spaces: mask up to the next ``key=``."""
_URL_IN_TEXT: Final = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_MIN_ECHOED_SECRET: Final = 3
"""Shorter passwords are not searched for in error text (masking every "ab" would garble it)."""


class DatabaseUnreachable(Exception):
    """The database could not be reached; the message is one line with no credential in it."""


def _is_uri(conninfo: str) -> bool:
    return conninfo.startswith(("postgresql://", "postgres://")) or "://" in conninfo.split(" ", 1)[0]


def _uri_userinfo_end(rest: str) -> int:
    """Where the userinfo of ``rest`` (a URI after ``scheme://``) ends: the index of its ``@``, or -1.

    libpq ends the credentials at an ``@`` before the first ``/`` (a host cannot hold ``@``, so the
    last one there is the separator). With none there, a password may hold an unencoded ``/``:
    assume the last ``@`` of the string ends it, hiding too much rather than too little.
    """
    slash = rest.find("/")
    head = rest if slash < 0 else rest[:slash]
    at = head.rfind("@")
    return at if at >= 0 else rest.rfind("@")


def _uri_password(conninfo: str) -> str | None:
    """The password as written in a URI (not decoded), by the masking rule above."""
    _, _, rest = conninfo.partition("://")
    at = _uri_userinfo_end(rest)
    if at < 0 or ":" not in rest[:at]:
        return None
    return rest[:at].split(":", 1)[1]


def _redact_uri(conninfo: str) -> str:
    scheme, _, rest = conninfo.partition("://")
    if _uri_password(conninfo):  # an empty password ("postgres:@", the embedded server) hides nothing
        at = _uri_userinfo_end(rest)
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
    rest = _URI_SECRET_PARAM.sub(rf"\1{MASK}", rest)
    return f"{scheme}://{rest}"


def redact_conninfo(conninfo: str) -> str:
    """A libpq URL or ``key=value`` string with its password and token-like parameters masked."""
    if _is_uri(conninfo):
        return _redact_uri(conninfo)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return _MALFORMED_KEYWORD_SECRET.sub(rf"\1{MASK}", conninfo)  # mask by pattern, keep the rest readable
    for key in params:
        if re.fullmatch(_SECRET_KEY, key, re.IGNORECASE):
            params[key] = MASK
    return make_conninfo("", **params)


def _secrets(conninfo: str) -> list[str]:
    """Every password-like value of ``conninfo`` as written and as libpq decodes it, longest first."""
    found: set[str] = set()
    if _is_uri(conninfo):
        written = _uri_password(conninfo)
        if written:
            found.add(written)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        params = {}
    for key, value in params.items():
        if re.fullmatch(_SECRET_KEY, key, re.IGNORECASE) and value:
            found.add(str(value))
    return sorted((value for value in found if len(value) >= _MIN_ECHOED_SECRET), key=len, reverse=True)


def _password_is_ambiguous(conninfo: str) -> bool:
    """True when libpq would read a different password than the URL's author wrote.

    That happens when a password holds an unencoded ``@`` or ``/``: libpq then takes part of the
    password for the host, and its error message would quote that part.
    """
    if not _is_uri(conninfo):
        return False
    written = _uri_password(conninfo)
    if not written:
        return False
    try:
        parsed = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return True
    return parsed is None or str(parsed) not in (written, unquote(written))


def describe_connection_error(exc: BaseException, conninfo: str) -> str:
    """``cannot reach the database at <redacted>: <the reason, on one line, without any secret>``."""
    where = redact_conninfo(conninfo)
    if _password_is_ambiguous(conninfo):
        reason = "the URL's password seems to hold an unencoded '@', '/', '?' or '#' (percent-encode them)"
        return f"cannot reach the database at {where}: {reason}"
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        # libpq's parse errors quote the text around the problem, which may be part of a password
        return f"cannot reach the database at {where}: the connection string is malformed"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = " ".join(lines) if lines else type(exc).__name__
    # libpq's messages name host and port, never the password; mask anyway in case one is echoed.
    for secret in _secrets(conninfo):
        reason = reason.replace(secret, MASK)
    reason = _URL_IN_TEXT.sub(lambda match: redact_conninfo(match.group(0)), reason)
    reason = _KEYWORD_SECRET.sub(rf"\1{MASK}", reason)
    return f"cannot reach the database at {where}: {reason}"
