"""Connection strings in messages: always redacted, always one line."""

from __future__ import annotations

import psycopg

from bridge.domain.redaction import redact_url


class DatabaseUnreachable(Exception):
    """The database could not be reached; the message is one line with no credential in it."""


def redact_conninfo(conninfo: str) -> str:
    """A URL or a ``key=value`` connection string with its password masked."""
    if "://" in conninfo:
        return redact_url(conninfo)
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    if "password" in params:
        params["password"] = "***"
    return " ".join(f"{key}={value}" for key, value in params.items())


def describe_connection_error(exc: BaseException, conninfo: str) -> str:
    """``cannot reach the database at <redacted>: <first line of the reason>``."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = " ".join(lines) if lines else type(exc).__name__
    # libpq's messages name host and port, never the password; mask anyway in case one is echoed.
    try:
        password = psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        password = None
    if password and len(str(password)) >= 3:
        reason = reason.replace(str(password), "***")
    return f"cannot reach the database at {redact_conninfo(conninfo)}: {redact_url(reason)}"
