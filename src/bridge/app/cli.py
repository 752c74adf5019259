"""The ``bridge`` command: the entry points. Each verb loads settings, sets up logging, builds the
adapters it needs through the registry and hands them to ``service``.

Errors a user can fix (bad settings, unreachable database, a taken port, an unusable BRIDGE_HOME, a
refused credential, an edited migration) end with one clear line and a non-zero exit, never a
traceback; no message contains a credential. Exit codes: 0 success, 1 a runtime failure, 2 invalid
configuration.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import trio
from rich.console import Console
from rich.table import Table as RichTable

from bridge.adapters.journal import JournalLocked, JournalUnusable
from bridge.adapters.postgres.conninfo import redact_conninfo
from bridge.adapters.postgres.leases import open_leases
from bridge.adapters.postgres.migrations import DatabaseUnreachable, MigrationError, migrate, pending
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.adapters.recording import InvalidRecordingLine, RecordingWriter, read_recording
from bridge.adapters.replay import ReplayFeed
from bridge.app.checks import describe_database
from bridge.app.database import EmbeddedDatabaseFailed, open_database
from bridge.app.leases import LeaseCoordinator, LeaseTiming
from bridge.app.pipeline import run_bridge
from bridge.app.registry import FEEDS, build_feed, build_normalizers
from bridge.app.runtime import tune_garbage_collector
from bridge.app.service import (
    FeedRefused,
    HttpPortUnavailable,
    pipeline_config,
    record_feed,
    serve_until_signalled,
    utc_now,
)
from bridge.app.settings import (
    Settings,
    SettingsError,
    feed_problems,
    load_settings,
    selected_feeds,
    unknown_variables,
)
from bridge.app.stats import PipelineStats
from bridge.domain.models import DATA_TABLES, Table
from bridge.logs import REDACTOR, configure_logging, get_logger

log = get_logger(__name__, component="service")
F = TypeVar("F", bound=Callable[..., Any])
EXIT_CONFIG = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"bridge: {REDACTOR.redact(message)}", err=True)
    sys.exit(code)


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    for warning in unknown_variables(environ):
        click.echo(f"bridge: warning: {warning}", err=True)
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        fail(str(exc), EXIT_CONFIG)
    for secret in settings.secrets():
        REDACTOR.add(secret)
    configure_logging(format=settings.log_format, level=settings.log_level, redactor=REDACTOR)
    return settings


def user_errors(function: F) -> F:
    """Turn the errors a user can act on into one line and an exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as raised:
            exc = _innermost(raised)  # from inside a nursery, an error arrives in a group of one
            if isinstance(
                exc,
                DatabaseUnreachable | EmbeddedDatabaseFailed | HttpPortUnavailable | JournalLocked | JournalUnusable,
            ):
                fail(str(exc))
            if isinstance(exc, FeedRefused):
                fail(f"credentials refused by {exc}")
            if isinstance(exc, MigrationError):
                fail(f"migration refused: {exc}")
            raise

    return wrapper  # type: ignore[return-value]


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@contextmanager
def repository_for(
    settings: Settings, *, database_url: str | None = None, require_reachable: bool = True
) -> Iterator[PostgresRepository]:
    with database_for(settings, database_url=database_url, require_reachable=require_reachable) as (_, repository):
        yield repository


@contextmanager
def database_for(
    settings: Settings, *, database_url: str | None = None, require_reachable: bool = True
) -> Iterator[tuple[str, PostgresRepository]]:
    """The database's URL (the embedded server's, if none is given) and a repository on it."""
    url_given = database_url or settings.database_url
    # `bridge run` on a server of the user's own applies no migrations (that is `bridge migrate`'s job, and the
    # server may be down at start); the embedded one is the bridge's own and is migrated as it starts
    migrate_first = require_reachable or not url_given
    with (
        open_database(url_given, settings.home, apply_migrations=migrate_first) as url,
        open_repository(url, pool_mode=settings.db_pool_mode, require_reachable=require_reachable) as repository,
    ):
        if not require_reachable:
            require_migrated(url)
        yield url, repository


def require_migrated(url: str) -> None:
    """``bridge run`` on a database that answers but was never migrated stops with that reason.

    A database that does not answer is checked by nothing here: that is an outage, journaled through.
    """
    try:
        missing = pending(url)
    except DatabaseUnreachable:
        return
    if missing:
        fail(
            f"the database {redact_conninfo(url)} lacks {len(missing)} migration(s) ({', '.join(missing)}):"
            " run `bridge migrate` first"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stream-bridge")
def main() -> None:
    """Stream Bridge: real-time trading streams into PostgreSQL."""


@main.command()
@user_errors
def run() -> None:
    """Run the service: the feeds configured in the environment, until SIGTERM/SIGINT."""
    settings = settings_from_env()
    feeds = selected_feeds(settings)
    problems = feed_problems(settings, feeds)
    if problems:
        fail(str(SettingsError(problems)), EXIT_CONFIG)
    stats = PipelineStats()
    with ExitStack() as stack:
        url, repository = stack.enter_context(database_for(settings, require_reachable=False))
        leases = None
        if settings.leases == "on":
            lease_store = stack.enter_context(open_leases(url, pool_mode=settings.db_pool_mode))
            timing = LeaseTiming(settings.lease_ttl_s)
            leases = LeaseCoordinator(lease_store, settings.instance_id, feeds, timing, stats)
        log.info("bridge starting", feeds=feeds, database=describe_database(settings),
                 journal=str(settings.effective_journal_dir), instance=settings.instance_id,
                 leases=settings.leases, lease_ttl_s=settings.lease_ttl_s)  # fmt: skip
        tune_garbage_collector()
        flushed = trio.run(
            functools.partial(
                serve_until_signalled,
                [build_feed(name, settings, utc_now) for name in feeds],
                repository,
                build_normalizers(settings),
                pipeline_config(settings),
                stats,
                http_port=settings.http_port,
                http_host=settings.http_host,
                clock=utc_now,
                leases=leases,
            )
        )
    log.info("bridge stopped", frames=stats.total_frames, rows_written=stats.total_rows_written, flushed=flushed)
    sys.exit(0 if flushed else EXIT_FAILED)


@main.command(name="migrate")
@user_errors
def migrate_command() -> None:
    """Apply pending migrations (safe to run from several pods at once)."""
    settings = settings_from_env()
    if settings.database_url:
        applied = migrate(settings.database_url)
        where = redact_conninfo(settings.database_url)
    else:
        with open_database(None, settings.home, apply_migrations=False) as url:
            applied = migrate(url)
        where = f"the embedded PostgreSQL in {settings.home}"
    click.echo(f"applied {len(applied)} migration(s) to {where}" + (f": {', '.join(applied)}" if applied else ""))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="0 = as fast as possible, 1 = real time, 10 = ten times faster",
)
@user_errors
def replay(files: tuple[Path, ...], speed: float) -> None:
    """Run recordings through the full pipeline into the database, then print a summary."""
    settings = settings_from_env()
    stats = PipelineStats()
    feed = ReplayFeed(list(files), speed=speed)
    started = time.perf_counter()
    with repository_for(settings) as repository:

        async def replay_all() -> bool:
            async def never() -> None:
                await trio.sleep_forever()

            return await run_bridge(
                [feed],
                repository,
                build_normalizers(settings),
                pipeline_config(settings, durable=False),
                stats,
                utc_now,
                never,
            )

        tune_garbage_collector()
        trio.run(replay_all)
        stored = repository.count_rows()
    elapsed = time.perf_counter() - started
    if stats.total_frames == 0 and feed.invalid_lines:
        fail(f"nothing replayed: all {feed.invalid_lines} line(s) are invalid ({first_invalid_line(files)})")
    console = Console()
    console.print(
        f"replayed {stats.total_frames:,} frames from {len(files)} file(s) in {elapsed:.1f}s"
        + (f" ({feed.invalid_lines} invalid line(s) skipped)" if feed.invalid_lines else "")
    )
    console.print(summary_table(stats, stored))


def first_invalid_line(files: tuple[Path, ...]) -> str:
    """Where the first invalid line of ``files`` is, and why it is invalid."""
    for path in files:
        for number, item in read_recording(path):
            if isinstance(item, InvalidRecordingLine):
                return f"{path} line {number}: {item}"
    return "no line could be read"


def summary_table(stats: PipelineStats, stored: Mapping[Table, int]) -> RichTable:
    table = RichTable("table", "rows from this run", "new or changed", "rows stored now")
    for name in (*DATA_TABLES, Table.DEAD_LETTERS):
        table.add_row(
            str(name),
            f"{stats.rows_committed[name]:,}",
            f"{stats.rows_written[name]:,}",
            f"{stored.get(name, 0):,}",
        )
    return table


@main.command()
@click.option("--feed", "feed_name", required=True, type=click.Choice(sorted(FEEDS)), help="the feed to record")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="recording file")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="stop after this many seconds")
@click.option("--frames", type=click.IntRange(min=1), help="stop after this many frames")
@user_errors
def record(feed_name: str, out: Path, duration: float | None, frames: int | None) -> None:
    """Record a live feed's frames (JSON Lines), without touching the database."""
    settings = settings_from_env()
    problems = feed_problems(settings, [feed_name])
    if problems:
        fail(str(SettingsError(problems)), EXIT_CONFIG)
    stats = PipelineStats()
    with RecordingWriter(out) as writer:
        trio.run(
            functools.partial(
                record_feed,
                build_feed(feed_name, settings, utc_now),
                writer,
                stats,
                duration_s=duration,
                frames=frames,
                restart=pipeline_config(settings),
            )
        )
    click.echo(f"recorded {writer.frames:,} frame(s) from {feed_name} to {out}")


@main.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="seconds to stream before the summary",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=2000.0,
    show_default=True,
    help="simulated messages per second",
)
@click.option(
    "--database-url",
    envvar="BRIDGE_DEMO_DATABASE_URL",
    help="use this database instead of the embedded one (DATABASE_URL is deliberately ignored)",
)
@user_errors
def demo(duration: float, rate: float, database_url: str | None) -> None:
    """The bridge end to end on the embedded default, against built-in simulated streams."""
    import shutil

    import attrs

    from bridge.app.demo import SAMPLE_QUERY, next_steps, run_demo, table_line

    environ = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    settings = settings_from_env(environ)
    if settings.log_level == "info" and "BRIDGE_LOG_LEVEL" not in os.environ:
        configure_logging(format=settings.log_format, level="warning", redactor=REDACTOR)
    # A journal of its own, empty at each start: the demo's reconciliation counts this run's frames only,
    # and a `bridge run` holding BRIDGE_HOME's journal does not stop it.
    journal = settings.home / "demo-journal"
    shutil.rmtree(journal, ignore_errors=True)
    settings = attrs.evolve(settings, journal_dir=journal)
    console = Console()
    stats = PipelineStats()
    where = "the embedded PostgreSQL" if not database_url else redact_conninfo(database_url)
    console.print(f"[bold]Stream Bridge demo[/]: simulated streams → {where} ({settings.home})")
    if not database_url:
        first = not (settings.home / "pgdata").is_dir()
        console.print(
            f"Setting up the embedded PostgreSQL in {settings.home / 'pgdata'} (first start: this takes a few seconds)…"
            if first
            else f"Starting the embedded PostgreSQL in {settings.home / 'pgdata'}…",
            highlight=False,
            soft_wrap=True,
        )
    with repository_for(settings, database_url=database_url) as repository:
        before = repository.count_rows()
        console.print(f"Streaming for {duration:g} s from the simulators on 127.0.0.1…", highlight=False)
        tune_garbage_collector()
        result = trio.run(
            functools.partial(
                run_demo,
                repository,
                duration_s=duration,
                rate=rate,
                console=console,
                stats=stats,
                config=pipeline_config(settings),
                settings=settings,
            )
        )
        stored = repository.count_rows()
    shutil.rmtree(journal, ignore_errors=True)  # every frame is committed: the journal holds nothing needed
    console.print()
    console.print(summary_table(stats, stored))
    console.print("\n[bold]Per feed[/]: what each simulator sent, and what became of it")
    for line in result.reconciliation(stats):
        console.print(line, highlight=False, soft_wrap=True)
    console.print("\n[bold]Per table[/]: rows made by the normalizers, and what the database did with them")
    for table in (*DATA_TABLES, Table.DEAD_LETTERS):
        console.print(table_line(table, stats, before.get(table, 0), stored.get(table, 0)), highlight=False,
                      soft_wrap=True)  # fmt: skip
    for line in result.summary():
        console.print(line, highlight=False, soft_wrap=True)
    console.print("\nQuery what was stored (works after the demo; starts the embedded database on demand):",
                  soft_wrap=True)  # fmt: skip
    console.print(f'  bridge query "{SAMPLE_QUERY}"', soft_wrap=True, highlight=False)
    console.print(
        '  bridge query "select feed, reason from bridge_dead_letters order by received_at desc limit 5"',
        soft_wrap=True,
        highlight=False,
    )
    for line in next_steps(settings.home):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


@main.command()
@click.argument("sql")
@user_errors
def query(sql: str) -> None:
    """Run one SQL statement against the bridge's database and print the result."""
    import psycopg

    settings = settings_from_env()
    with open_database(settings.database_url, settings.home) as url, psycopg.connect(url) as connection:
        try:
            cursor = connection.execute(sql.encode())
        except psycopg.Error as exc:
            fail(f"query failed: {str(exc).strip().splitlines()[0]}")
        if cursor.description is None:
            click.echo(f"{cursor.rowcount} row(s) affected")
            return
        table = RichTable(*[column.name for column in cursor.description])
        for row in cursor.fetchall():
            table.add_row(*["" if value is None else str(value) for value in row])
        Console().print(table)


@main.command()
@user_errors
def check() -> None:
    """Print the effective configuration (secrets masked) and try the database and each feed."""
    from bridge.app.checks import describe_database, run_checks

    settings = settings_from_env()
    console = Console(soft_wrap=True)  # one line per variable and per result, however narrow the terminal
    described = settings.describe()
    width = max(len(name) for name, _ in described)
    for name, value in described:  # plain lines: long URLs stay whole, and can be copied
        console.print(f"{name:<{width}}  {value}", highlight=False, markup=False)
    console.print(f"database: {describe_database(settings)}", highlight=False)
    results = run_checks(settings)
    for name, ok, detail in results:
        console.print(f"{'[green]ok[/]' if ok else '[red]FAIL[/]'}  {name}: {REDACTOR.redact(detail)}")
    sys.exit(0 if all(ok for _, ok, _ in results) else EXIT_FAILED)


@main.command()
@click.argument("name", type=click.Choice(list(FEEDS)))
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port; tastytrade, tradier and schwab serve their REST API on this port P and"
                   " their streamer on P+1")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="simulated messages per second (each simulator scales it to its kind)")  # fmt: skip
def simulate(name: str, port: int, host: str, rate: float) -> None:
    """Run one built-in simulator in the foreground and print the variables that point `bridge run` at it."""
    from bridge.app.simulate import serve_simulator

    try:
        trio.run(functools.partial(serve_simulator, FEEDS[name], host=host, port=port, rate=rate, out=sys.stdout))
    except Exception as raised:
        exc = _innermost(raised)  # from inside a nursery, an error arrives in a group of one
        if not isinstance(exc, OSError):
            raise
        # the simulators name the address they could not bind (a broker's streamer is on the next port)
        fail(f"cannot listen on {exc.filename or f'{host}:{port}'}: {exc.strerror or exc}")


@main.command()
@click.option("--url", default=None, help="metrics URL [default: http://127.0.0.1:$BRIDGE_HTTP_PORT/metrics]")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="seconds between refreshes")  # fmt: skip
def top(url: str | None, interval: float) -> None:
    """A live view of a running bridge, read from its /metrics endpoint."""
    settings = settings_from_env()
    try:
        from bridge.app.top import run_top
    except ModuleNotFoundError as exc:
        if exc.name != "bridge.app.top":
            raise
        fail("`bridge top` is not part of this build")
    sys.exit(run_top(url or f"http://127.0.0.1:{settings.http_port}/metrics", interval))


if __name__ == "__main__":
    main()
