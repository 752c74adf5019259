"""Settings: the environment, validated once at start into one immutable value.

Every variable is declared once, as a field of ``Settings`` with its environment name in the
field's metadata; cattrs structures the strings into typed values and collects every problem, so
one error message names each bad variable and what it expects. Secrets are never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, NewType
from urllib.parse import unquote, urlsplit

import attrs
import cattrs
from cattrs.errors import ClassValidationError

from bridge.domain.policies import BatchPolicy

PositiveInt = NewType("PositiveInt", int)
Port = NewType("Port", int)
PositiveFloat = NewType("PositiveFloat", float)
FeedList = NewType("FeedList", tuple[str, ...])
LogFormat = Literal["json", "console"]
PoolMode = Literal["auto", "direct", "session", "transaction"]
LogLevel = Literal["debug", "info", "warning", "error"]

#: Feeds this version of the bridge can run: the setting whose presence selects it by default.
FEEDS: Final[Mapping[str, str]] = {
    "console": "console_url",
    "polygon": "polygon_api_key",
    "benzinga": "benzinga_api_key",
    "tastytrade": "tastytrade_token",
    "tradier": "tradier_token",
    "schwab": "schwab_token",
}
ContractList = NewType("ContractList", tuple[str, ...])


def _env(name: str, help: str, *, secret: bool = False) -> dict[str, Any]:
    return {"env": name, "help": help, "secret": secret}


@attrs.frozen
class Settings:
    database_url: str | None = attrs.field(
        default=None,
        metadata=_env("DATABASE_URL", "PostgreSQL URL; unset = embedded PostgreSQL under BRIDGE_HOME", secret=True),
    )
    home: Path = attrs.field(default=Path(".bridge"), metadata=_env("BRIDGE_HOME", "data directory"))
    feeds: FeedList | None = attrs.field(
        default=None,
        metadata=_env("BRIDGE_FEEDS", "comma-separated feeds to run; default: every feed whose settings are set"),
    )
    console_url: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_CONSOLE_URL", "Developer Console WebSocket URL (ws:// or wss://)")
    )
    console_token: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_CONSOLE_TOKEN", "Developer Console bearer token", secret=True)
    )
    polygon_api_key: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_POLYGON_API_KEY", "Polygon/Massive API key", secret=True)
    )
    polygon_url: str = attrs.field(
        default="wss://socket.massive.com/options",
        metadata=_env("BRIDGE_POLYGON_URL", "Polygon/Massive options WebSocket URL"),
    )
    polygon_subscribe: str = attrs.field(
        default="T.*", metadata=_env("BRIDGE_POLYGON_SUBSCRIBE", "channels to subscribe, e.g. T.* or T.O:SPY…")
    )
    polygon_quote_contracts: ContractList = attrs.field(
        default=ContractList(()),
        metadata=_env("BRIDGE_POLYGON_QUOTE_CONTRACTS", "contracts whose quotes are always streamed (comma-separated)"),
    )
    polygon_quote_limit: PositiveInt = attrs.field(
        default=PositiveInt(1000),
        metadata=_env("BRIDGE_POLYGON_QUOTE_LIMIT", "contracts one connection may stream quotes for"),
    )
    benzinga_api_key: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_BENZINGA_API_KEY", "Benzinga news stream token", secret=True)
    )
    benzinga_url: str = attrs.field(
        default="wss://api.benzinga.com/api/v1/news/stream",
        metadata=_env("BRIDGE_BENZINGA_URL", "Benzinga news stream URL (tickers/channels filters may be added)"),
    )
    tastytrade_token: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_TASTYTRADE_TOKEN", "tastytrade session/OAuth access token", secret=True)
    )
    tastytrade_accounts: ContractList = attrs.field(
        default=ContractList(()),
        metadata=_env("BRIDGE_TASTYTRADE_ACCOUNTS", "tastytrade account numbers to stream (comma-separated)"),
    )
    tastytrade_url: str = attrs.field(
        default="wss://streamer.tastyworks.com",
        metadata=_env("BRIDGE_TASTYTRADE_URL", "tastytrade account streamer URL (sandbox: streamer.cert…)"),
    )
    tastytrade_api_url: str = attrs.field(
        default="https://api.tastyworks.com",
        metadata=_env("BRIDGE_TASTYTRADE_API_URL", "tastytrade REST base URL (positions and balances snapshots)"),
    )
    tradier_token: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_TRADIER_TOKEN", "Tradier access token", secret=True)
    )
    tradier_accounts: ContractList = attrs.field(
        default=ContractList(()), metadata=_env("BRIDGE_TRADIER_ACCOUNTS", "Tradier account ids (comma-separated)")
    )
    tradier_api_url: str = attrs.field(
        default="https://api.tradier.com/v1",
        metadata=_env("BRIDGE_TRADIER_API_URL", "Tradier REST base (sandbox: https://sandbox.tradier.com/v1)"),
    )
    tradier_poll_seconds: PositiveFloat = attrs.field(
        default=PositiveFloat(5.0),
        metadata=_env("BRIDGE_TRADIER_POLL_SECONDS", "seconds between Tradier position/balance polls"),
    )
    schwab_token: str | None = attrs.field(
        default=None, metadata=_env("BRIDGE_SCHWAB_TOKEN", "Schwab OAuth access token", secret=True)
    )
    schwab_api_url: str = attrs.field(
        default="https://api.schwabapi.com/trader/v1",
        metadata=_env("BRIDGE_SCHWAB_API_URL", "Schwab Trader API base (accounts, userPreference)"),
    )
    schwab_poll_seconds: PositiveFloat = attrs.field(
        default=PositiveFloat(5.0),
        metadata=_env("BRIDGE_SCHWAB_POLL_SECONDS", "seconds between Schwab position/balance polls"),
    )
    quote_max_age_ms: PositiveInt = attrs.field(
        default=PositiveInt(5000),
        metadata=_env("BRIDGE_QUOTE_MAX_AGE_MS", "oldest quote (event time) that may give a trade its side"),
    )
    nbbo_max_idle_s: PositiveFloat = attrs.field(
        default=PositiveFloat(900.0),
        metadata=_env("BRIDGE_NBBO_MAX_IDLE_S", "a contract not quoted this long (event time) leaves the NBBO book"),
    )
    nbbo_max_contracts: PositiveInt = attrs.field(
        default=PositiveInt(200_000),
        metadata=_env("BRIDGE_NBBO_MAX_CONTRACTS", "most contracts the NBBO book holds (the least recently quoted go)"),
    )
    batch_max_rows: PositiveInt = attrs.field(
        default=PositiveInt(5000), metadata=_env("BRIDGE_BATCH_MAX_ROWS", "rows per batch at most")
    )
    batch_max_ms: PositiveFloat = attrs.field(
        default=PositiveFloat(100.0),
        metadata=_env("BRIDGE_BATCH_MAX_MS", "milliseconds a row may wait for its batch to fill"),
    )
    spool_dir: Path | None = attrs.field(
        default=None,
        metadata=_env(
            "BRIDGE_SPOOL_DIR", "disk spool for batches the database cannot take (default BRIDGE_HOME/spool)"
        ),
    )
    buffer_max_rows: PositiveInt = attrs.field(
        default=PositiveInt(25_000),
        metadata=_env("BRIDGE_BUFFER_MAX_ROWS", "rows each table's writer holds in memory before spooling to disk"),
    )
    options_flow_writers: PositiveInt = attrs.field(
        default=PositiveInt(2),
        metadata=_env("BRIDGE_OPTIONS_FLOW_WRITERS", "options_flow batches written at once (one connection each)"),
    )
    max_frame_bytes: PositiveInt = attrs.field(
        default=PositiveInt(16 * 1024 * 1024),
        metadata=_env("BRIDGE_MAX_FRAME_BYTES", "larger frames are dead-lettered instead of parsed"),
    )
    max_silence_s: PositiveFloat = attrs.field(
        default=PositiveFloat(90.0),
        metadata=_env("BRIDGE_MAX_SILENCE_S", "seconds without a message before a stream is reconnected"),
    )
    shutdown_grace_s: PositiveFloat = attrs.field(
        default=PositiveFloat(20.0),
        metadata=_env("BRIDGE_SHUTDOWN_GRACE_S", "seconds to flush on SIGTERM before giving up"),
    )
    db_pool_mode: PoolMode = attrs.field(
        default="auto",
        metadata=_env(
            "BRIDGE_DB_POOL_MODE", "auto | direct | session | transaction (auto: port 6543 means transaction)"
        ),
    )
    http_port: Port = attrs.field(
        default=Port(8080), metadata=_env("BRIDGE_HTTP_PORT", "port for /healthz, /readyz, /metrics; 0 = off")
    )
    http_host: str = attrs.field(default="0.0.0.0", metadata=_env("BRIDGE_HTTP_HOST", "address to listen on"))
    log_format: LogFormat = attrs.field(default="console", metadata=_env("BRIDGE_LOG_FORMAT", "json | console"))
    log_level: LogLevel = attrs.field(
        default="info", metadata=_env("BRIDGE_LOG_LEVEL", "debug | info | warning | error")
    )

    @property
    def effective_spool_dir(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.home / "spool"

    @property
    def batching(self) -> BatchPolicy:
        return BatchPolicy(max_rows=self.batch_max_rows, max_ms=self.batch_max_ms)

    def secrets(self) -> list[str]:
        """Values that must never reach a log line: tokens whole, URLs by their password.

        A URL's host and user stay readable in messages (``postgresql://user:***@host/db``);
        URL-shaped text is redacted structurally by the log redactor anyway.
        """
        values: list[str] = []
        for field in attrs.fields(Settings):
            value = getattr(self, field.name)
            if not field.metadata["secret"] or not value:
                continue
            if "://" in value:
                password = urlsplit(value).password
                values += [password, unquote(password)] if password else []
            else:
                values.append(value)
        return values

    def describe(self) -> list[tuple[str, str]]:
        """Every variable with its effective value, secrets masked (for ``bridge check``)."""
        rows = []
        for field in attrs.fields(Settings):
            value = getattr(self, field.name)
            if value is None:
                shown = "(unset)"
            elif field.metadata["secret"]:
                shown = "***"
            elif isinstance(value, tuple):
                shown = ",".join(value)
            else:
                shown = str(value)
            rows.append((field.metadata["env"], shown))
        return rows


class SettingsError(Exception):
    """Every problem found in the environment, one per line, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems))
        self.problems = problems


def _positive_int(value: object, _: object) -> int:
    number = int(str(value).strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _port(value: object, _: object) -> int:
    number = int(str(value).strip())
    if not 0 <= number <= 65535:
        raise ValueError("must be a TCP port (1-65535), or 0 to turn the HTTP server off")
    return number


def _positive_float(value: object, _: object) -> float:
    number = float(str(value).strip())
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a positive number")
    return number


def _feed_list(value: object, _: object) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in str(value).split(",") if name.strip())
    unknown = [name for name in names if name not in FEEDS]
    if unknown:
        raise ValueError(f"unknown feed(s) {', '.join(unknown)}; available: {', '.join(FEEDS)}")
    return names


def _contract_list(value: object, _: object) -> tuple[str, ...]:
    return tuple(item.strip().upper() for item in str(value).split(",") if item.strip())


def _websocket_url(value: object, _: object) -> str:
    text = str(value).strip()
    if not re.match(r"^wss?://[^/\s]+", text):
        raise ValueError("must be a ws:// or wss:// URL")
    return text


_converter = cattrs.Converter(detailed_validation=True)
_converter.register_structure_hook(PositiveInt, _positive_int)
_converter.register_structure_hook(PositiveFloat, _positive_float)
_converter.register_structure_hook(FeedList, _feed_list)
_converter.register_structure_hook(Port, _port)
_converter.register_structure_hook(ContractList, _contract_list)
_URL_FIELDS: Final = {"console_url", "polygon_url", "benzinga_url", "tastytrade_url"}


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read every variable; raise ``SettingsError`` listing each one that is wrong."""
    raw: dict[str, str] = {}
    by_field = {field.name: field for field in attrs.fields(Settings)}
    for field in by_field.values():
        value = environ.get(field.metadata["env"])
        if value is not None and value.strip() != "":
            raw[field.name] = value
    problems: list[str] = []
    for name in _URL_FIELDS & raw.keys():
        try:
            raw[name] = _websocket_url(raw[name], None)
        except ValueError as exc:
            problems.append(_problem(by_field[name], raw[name], exc))
            del raw[name]
    try:
        settings = _converter.structure(raw, Settings)
    except ClassValidationError as group:
        for error in group.exceptions:
            attribute = _attribute_of(error)
            failed = by_field.get(attribute) if attribute else None
            if failed is None:
                problems.append(str(error))
            else:
                problems.append(_problem(failed, raw.get(failed.name, ""), error))
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    return settings


def _attribute_of(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", []):
        match = re.search(r"@ attribute (\w+)", note)
        if match:
            return match.group(1)
    return None


def _problem(field: attrs.Attribute[Any], value: str, exc: BaseException) -> str:
    env = field.metadata["env"]
    reason = str(exc)
    if isinstance(exc, ValueError) and reason.startswith(("invalid literal", "could not convert")):
        reason = "must be a number"
    if "not in literal" in reason:
        reason = f"must be one of: {field.metadata['help']}"
    shown = "(value hidden)" if field.metadata["secret"] else repr(value)
    return f"{env}={shown}: {reason}"


def selected_feeds(settings: Settings) -> list[str]:
    """The feeds to run: BRIDGE_FEEDS, or every feed with settings present."""
    if settings.feeds is not None:
        return list(settings.feeds)
    return [name for name, selector in FEEDS.items() if getattr(settings, selector)]


def feed_problems(settings: Settings, feeds: list[str]) -> list[str]:
    """What is missing for the selected feeds to run."""
    problems = []
    selectors = {field.name: field.metadata["env"] for field in attrs.fields(Settings)}
    if not feeds:
        variables = ", ".join(selectors[selector] for selector in FEEDS.values())
        problems.append(f"no feed configured: set BRIDGE_FEEDS or a feed's settings ({variables})")
    needs = {
        "console": "its WebSocket URL",
        "polygon": "the API key",
        "benzinga": "the API token",
        "tastytrade": "an access token",
        "tradier": "an access token",
        "schwab": "an OAuth access token",
    }
    for name in feeds:
        if not getattr(settings, FEEDS[name]):
            problems.append(f"{selectors[FEEDS[name]]} is not set: the {name} feed needs {needs[name]}")
    if "tastytrade" in feeds and not settings.tastytrade_accounts:
        problems.append("BRIDGE_TASTYTRADE_ACCOUNTS is not set: the tastytrade feed needs the accounts to stream")
    if "tradier" in feeds and not settings.tradier_accounts:
        problems.append("BRIDGE_TRADIER_ACCOUNTS is not set: the tradier feed needs the accounts to poll")
    return problems
