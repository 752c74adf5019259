"""Settings: the environment, validated once at start into one immutable value.

The core variables are fields of ``Settings``; each vendor's are fields of its own settings class
(``bridge.app.vendors``), read from ``BRIDGE_<VENDOR>_<FIELD>`` and held in ``Settings.vendors``.
cattrs structures the strings into typed values; every problem it reports comes back as a
structured error (the exception and the attribute it belongs to), so one error message names each
bad variable and what it expects. Secrets are never echoed.
"""

from __future__ import annotations

import difflib
import socket
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, cast

import attrs
from attrs import AttrsInstance
from cattrs.errors import ClassValidationError

from bridge.app.registry import FEEDS
from bridge.app.setting_types import (
    DatabaseUrl,
    FeedList,
    LeaseTtl,
    NonNegativeFloat,
    Port,
    PositiveFloat,
    PositiveInt,
    make_converter,
    setting,
)
from bridge.app.vendors.base import FeedSpec
from bridge.domain.policies import BatchPolicy
from bridge.domain.redaction import redact_url, url_secrets

S = TypeVar("S", bound=AttrsInstance)
LogFormat = Literal["json", "console"]
PoolMode = Literal["auto", "direct", "session", "transaction"]
LogLevel = Literal["debug", "info", "warning", "error"]
LeaseMode = Literal["on", "off"]

NOT_SETTINGS: Final = frozenset({"BRIDGE_TEST_DATABASE_URL", "BRIDGE_DEMO_DATABASE_URL"})
"""``BRIDGE_*`` variables that are read elsewhere (the tests, ``bridge demo --database-url``)."""


def _read_only(vendors: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(vendors))


def _default_vendors() -> Mapping[str, Any]:
    return {name: spec.settings() for name, spec in FEEDS.items()}


@attrs.frozen
class Settings:
    database_url: DatabaseUrl | None = setting(
        None, "PostgreSQL URL; unset = embedded PostgreSQL under BRIDGE_HOME", secret=True, env="DATABASE_URL"
    )
    home: Path = setting(Path(".bridge"), "data directory", env="BRIDGE_HOME")
    feeds: FeedList | None = setting(
        None, "comma-separated feeds to run; default: every feed whose settings are set", env="BRIDGE_FEEDS"
    )
    quote_max_age_ms: PositiveInt = setting(
        PositiveInt(5000), "oldest quote (event time) that may give a trade its side", env="BRIDGE_QUOTE_MAX_AGE_MS"
    )
    nbbo_max_idle_s: PositiveFloat = setting(
        PositiveFloat(900.0), "a contract not quoted this long (event time) leaves the NBBO book",
        env="BRIDGE_NBBO_MAX_IDLE_S",
    )  # fmt: skip
    nbbo_max_contracts: PositiveInt = setting(
        PositiveInt(200_000), "most contracts the NBBO book holds (the least recently quoted go)",
        env="BRIDGE_NBBO_MAX_CONTRACTS",
    )  # fmt: skip
    batch_max_rows: PositiveInt = setting(PositiveInt(5000), "rows per batch at most", env="BRIDGE_BATCH_MAX_ROWS")
    batch_max_ms: NonNegativeFloat = setting(
        NonNegativeFloat(0.0),
        "milliseconds a writer lingers for a fuller batch (0: group commit, write what is waiting at once)",
        env="BRIDGE_BATCH_MAX_MS",
    )
    journal_dir: Path | None = setting(
        None, "where received frames are journaled (default BRIDGE_HOME/journal)", env="BRIDGE_JOURNAL_DIR"
    )
    journal_max_bytes: PositiveInt = setting(
        PositiveInt(2 * 1024**3), "the journal's disk budget in bytes", env="BRIDGE_JOURNAL_MAX_BYTES"
    )
    journal_fsync_ms: PositiveFloat = setting(
        PositiveFloat(5.0), "group-fsync interval of the journal in milliseconds", env="BRIDGE_JOURNAL_FSYNC_MS"
    )
    journal_retain_s: NonNegativeFloat = setting(
        NonNegativeFloat(0.0), "seconds committed journal segments are kept", env="BRIDGE_JOURNAL_RETAIN_S"
    )
    leases: LeaseMode = setting(
        "off",
        "on: each feed runs only on the replica holding its lease in bridge_leases (several replicas; a database"
        " outage longer than 3/4 of the lease pauses the feeds); off: this process runs every feed and its journal"
        " carries any database outage (one replica)",
        env="BRIDGE_LEASES",
    )
    lease_ttl_s: LeaseTtl = setting(
        LeaseTtl(10.0), "seconds a feed lease lasts unless renewed (at most 60)", env="BRIDGE_LEASE_TTL_S"
    )
    instance_id: str = setting(
        help="this replica's name in leases (default the hostname)", env="BRIDGE_INSTANCE_ID",
        factory=socket.gethostname,
    )  # fmt: skip
    options_flow_writers: PositiveInt = setting(
        PositiveInt(2), "options_flow batches written at once (one connection each)", env="BRIDGE_OPTIONS_FLOW_WRITERS"
    )
    max_frame_bytes: PositiveInt = setting(
        PositiveInt(16 * 1024 * 1024), "larger frames are dead-lettered instead of parsed", env="BRIDGE_MAX_FRAME_BYTES"
    )
    max_silence_s: PositiveFloat = setting(
        PositiveFloat(90.0), "seconds without a message before a stream is reconnected", env="BRIDGE_MAX_SILENCE_S"
    )
    shutdown_grace_s: PositiveFloat = setting(
        PositiveFloat(20.0), "seconds to flush on SIGTERM before giving up", env="BRIDGE_SHUTDOWN_GRACE_S"
    )
    db_pool_mode: PoolMode = setting(
        "auto", "auto | direct | session | transaction (auto: port 6543 means transaction)", env="BRIDGE_DB_POOL_MODE"
    )
    http_port: Port = setting(Port(8080), "port for /healthz, /readyz, /metrics; 0 = off", env="BRIDGE_HTTP_PORT")
    http_host: str = setting("0.0.0.0", "address to listen on", env="BRIDGE_HTTP_HOST")
    log_format: LogFormat = setting("console", "json | console", env="BRIDGE_LOG_FORMAT")
    log_level: LogLevel = setting("info", "debug | info | warning | error", env="BRIDGE_LOG_LEVEL")
    vendors: Mapping[str, Any] = attrs.field(factory=_default_vendors, converter=_read_only, metadata={"env": None})
    """Each feed's settings by feed name (an instance of its spec's settings class)."""

    def vendor(self, spec: FeedSpec[S]) -> S:
        """The settings of ``spec``'s vendor, typed: ``settings.vendor(polygon.SPEC).api_key``."""
        return cast(S, self.vendors[spec.name])

    @property
    def effective_journal_dir(self) -> Path:
        return self.journal_dir if self.journal_dir is not None else self.home / "journal"

    @property
    def batching(self) -> BatchPolicy:
        return BatchPolicy(max_rows=self.batch_max_rows, max_ms=self.batch_max_ms)

    def variables(self) -> list[tuple[str, attrs.Attribute[Any], Any]]:
        """Every variable: (its name, its field, its effective value), core first, then each feed's."""
        rows = [(field.metadata["env"], field, getattr(self, field.name)) for field in _core_fields()]
        for name, spec in FEEDS.items():
            vendor = self.vendors[name]
            fields = attrs.fields(spec.settings)
            rows += [(spec.env_name(field), field, getattr(vendor, field.name)) for field in fields]
        return rows

    def secrets(self) -> list[str]:
        """Values that must never reach a log line: tokens whole; URLs by their password and secret parameters.

        A URL's host and user stay readable in messages (``postgresql://user:***@host/db``).
        """
        values: list[str] = []
        for _, field, value in self.variables():
            if not isinstance(value, str) or not value:
                continue
            if "://" in value:
                values += url_secrets(value)
            elif field.metadata["secret"] and "=" in value and field.name == "database_url":
                values += _conninfo_password(value)
            elif field.metadata["secret"]:
                values.append(value)
        return values

    def describe(self) -> list[tuple[str, str]]:
        """Every variable with its effective value, secrets masked (for ``bridge check``)."""
        rows = []
        for env, field, value in self.variables():
            if value is None or value == ():
                shown = "(unset)"
            elif isinstance(value, tuple):
                shown = ",".join(value)
            elif isinstance(value, str) and "://" in value:
                shown = redact_url(value)  # a password or a ?token= in any URL, secret or not
            elif field.metadata["secret"]:
                shown = "***"
            else:
                shown = str(value)
            rows.append((env, shown))
        return rows


def _conninfo_password(conninfo: str) -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    password = conninfo_to_dict(conninfo).get("password")
    return [str(password)] if password else []


def _core_fields() -> list[attrs.Attribute[Any]]:
    return [field for field in attrs.fields(Settings) if field.metadata.get("env")]


def known_variables() -> list[str]:
    """Every variable the bridge reads, in the order ``bridge check`` shows them."""
    names = [field.metadata["env"] for field in _core_fields()]
    for spec in FEEDS.values():
        names += [spec.env_name(field) for field in attrs.fields(spec.settings)]
    return names


class SettingsError(Exception):
    """Every problem found in the environment, one per line, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems))
        self.problems = problems


_converter = make_converter(tuple(FEEDS))


def _structure(cls: type[S], named: Mapping[str, tuple[str, attrs.Attribute[Any]]], environ: Mapping[str, str],
               problems: list[str]) -> S | None:  # fmt: skip
    """``cls`` from the variables ``named`` (field name → (variable, field)); problems are appended."""
    raw = {}
    for name, (env, _) in named.items():
        value = environ.get(env)
        if value is not None and value.strip() != "":
            raw[name] = value
    try:
        return _converter.structure(raw, cls)
    except ClassValidationError as group:
        with_notes, without_notes = group.group_exceptions()
        for exc, note in with_notes:
            env, field = named[note.name]
            shown = "(value hidden)" if field.metadata["secret"] else repr(raw.get(note.name, ""))
            problems.append(f"{env}={shown}: {exc}")
        problems += [f"{type(exc).__name__}: {exc}" for exc in without_notes]
        return None


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read every variable; raise ``SettingsError`` listing each one that is wrong."""
    problems: list[str] = []
    core = _structure(Settings, {f.name: (f.metadata["env"], f) for f in _core_fields()}, environ, problems)
    vendors = {}
    for name, spec in FEEDS.items():
        named = {field.name: (spec.env_name(field), field) for field in attrs.fields(spec.settings)}
        vendors[name] = _structure(spec.settings, named, environ, problems)
    if problems or core is None:
        raise SettingsError(problems)
    return attrs.evolve(core, vendors=vendors)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``BRIDGE_*`` variable the bridge does not read, with the nearest known name."""
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        if not name.startswith("BRIDGE_") or name in known or name in NOT_SETTINGS:
            continue
        # Compared without the common prefix, which would make every name look alike.
        nearest = difflib.get_close_matches(name.removeprefix("BRIDGE_"), [k.removeprefix("BRIDGE_") for k in known],
                                            n=1, cutoff=0.6)  # fmt: skip
        hint = f"; did you mean BRIDGE_{nearest[0]}?" if nearest else ""
        warnings.append(f"{name} is not a setting of this bridge and is ignored{hint}")
    return warnings


def selected_feeds(settings: Settings) -> list[str]:
    """The feeds to run: BRIDGE_FEEDS, or every feed with settings present."""
    if settings.feeds is not None:
        return list(settings.feeds)
    return [name for name, spec in FEEDS.items() if spec.selected(settings.vendors[name])]


def feed_problems(settings: Settings, feeds: list[str]) -> list[str]:
    """What is missing for the selected feeds to run."""
    problems = []
    if not feeds:
        variables = ", ".join(name for spec in FEEDS.values() for name in spec.selectors())
        problems.append(f"no feed configured: set BRIDGE_FEEDS or a feed's settings ({variables})")
    for name in feeds:
        problems += FEEDS[name].problems(settings.vendors[name])
    return problems
