"""Masking secrets in text: every log line and error message passes through here before it is shown."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK: Final = "***"
_SECRET_PARAMS: Final = (
    "token|apikey|api_key|api-key|key|password|passwd|secret|access_token|auth-token|sessionid|session_id"
)
_QUERY_SECRET: Final = re.compile(rf"(?i)([?&;](?:{_SECRET_PARAMS})=)([^&#\s'\"]+)")
_URL: Final = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_FRAGMENTS: Final = (
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)([^\s\"',}]+)"),
    re.compile(rf"(?i)([\"'](?:{_SECRET_PARAMS})[\"']\s*:\s*[\"'])([^\"']+)"),
    re.compile(rf"(?i)(\b(?:{_SECRET_PARAMS})\s*=\s*)([^\s&'\",]+)"),
)
_MIN_SECRET_LENGTH: Final = 4


def redact_url(url: str) -> str:
    """Mask the password and secret-looking query parameters of a URL; leave the rest as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _QUERY_SECRET.sub(rf"\1{MASK}", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}"
    query = _QUERY_SECRET.sub(rf"\1{MASK}", "?" + parts.query)[1:] if parts.query else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_PARAM_NAME: Final = re.compile(rf"(?i)^(?:{_SECRET_PARAMS})$")


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL, as written and decoded: its password and secret-looking query values.

    Registered with a ``Redactor``, they are masked even where they appear outside a URL (an error
    message quoting a token on its own).
    """
    try:
        parts = urlsplit(url)
        password = parts.password
        params = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    raw_query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    for name, value in params:
        if _SECRET_PARAM_NAME.match(name):
            found += [value, raw_query.get(name, value)]
    return list(dict.fromkeys(found))


class Redactor:
    """Knows the secret values of this process and masks them, and anything secret-shaped, in text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < _MIN_SECRET_LENGTH or secret in self._secrets:
            return
        self._secrets.add(secret)
        for variant in (redact_url(secret),):
            if variant != secret and len(variant) >= _MIN_SECRET_LENGTH:
                self._secrets.add(variant)
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        text = _URL.sub(lambda match: redact_url(match.group(0)), text)
        for fragment in _FRAGMENTS:
            text = fragment.sub(rf"\1{MASK}", text)
        return text
