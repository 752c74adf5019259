"""The ``bridge`` command. Each verb loads settings, sets up logging and hands off to ``service``.

Errors a user can fix (bad settings, unreachable database, edited migration) end with one clear
message and a non-zero exit, never a traceback; no message contains a credential.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import trio
from rich.console import Console
from rich.table import Table as RichTable

from bridge.adapters.postgres.conninfo import redact_conninfo
from bridge.adapters.postgres.migrations import DatabaseUnreachable, MigrationError, migrate
from bridge.adapters.postgres.repository import PostgresRepository, open_repository
from bridge.adapters.recording import RecordingWriter
from bridge.adapters.replay import ReplayFeed
from bridge.app.database import open_database
from bridge.app.pipeline import run_bridge
from bridge.app.runtime import tune_garbage_collector
from bridge.app.service import (
    build_feed,
    normalizers,
    pipeline_config,
    record_feed,
    serve_until_signalled,
    utc_now,
)
from bridge.app.settings import FEEDS, Settings, SettingsError, feed_problems, load_settings, selected_feeds
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
    try:
        settings = load_settings(os.environ if environ is None else environ)
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
        except DatabaseUnreachable as exc:
            fail(str(exc))
        except MigrationError as exc:
            fail(f"migration refused: {exc}")

    return wrapper  # type: ignore[return-value]


@contextmanager
def repository_for(settings: Settings, *, database_url: str | None = None) -> Iterator[PostgresRepository]:
    with (
        open_database(database_url or settings.database_url, settings.home) as url,
        open_repository(url, pool_mode=settings.db_pool_mode) as repository,
    ):
        yield repository


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
    with repository_for(settings) as repository:
        log.info("bridge starting", feeds=feeds)
        tune_garbage_collector()
        flushed = trio.run(
            functools.partial(
                serve_until_signalled,
                [build_feed(name, settings) for name in feeds],
                repository,
                normalizers(settings),
                pipeline_config(settings),
                stats,
                http_port=settings.http_port,
                http_host=settings.http_host,
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
                normalizers(settings),
                pipeline_config(settings),
                stats,
                utc_now,
                never,
            )

        tune_garbage_collector()
        trio.run(replay_all)
        stored = repository.count_rows()
    elapsed = time.perf_counter() - started
    console = Console()
    console.print(
        f"replayed {stats.total_frames:,} frames from {len(files)} file(s) in {elapsed:.1f}s"
        + (f" ({feed.invalid_lines} invalid line(s) skipped)" if feed.invalid_lines else "")
    )
    console.print(summary_table(stats, stored))


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
                build_feed(feed_name, settings),
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
    from bridge.app.demo import SAMPLE_QUERY, quote_coverage, run_demo

    environ = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    settings = settings_from_env(environ)
    if settings.log_level == "info" and "BRIDGE_LOG_LEVEL" not in os.environ:
        configure_logging(format=settings.log_format, level="warning", redactor=REDACTOR)
    console = Console()
    stats = PipelineStats()
    where = "the embedded PostgreSQL" if not database_url else redact_conninfo(database_url)
    console.print(f"[bold]Stream Bridge demo[/]: simulated Developer Console → {where} ({settings.home})")
    with repository_for(settings, database_url=database_url) as repository:
        before = repository.count_rows()
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
            )
        )
        stored = repository.count_rows()
    console.print()
    console.print(summary_table(stats, stored))
    added = stored[Table.OPTIONS_FLOW] - before[Table.OPTIONS_FLOW]
    sent = result.console
    console.print(
        f"Developer Console simulator sent {sent.frames_sent:,} frames: "
        + ", ".join(f"{count:,} {table}" for table, count in sorted(sent.messages_by_table.items()))
        + f" and {sent.bad_frames_sent:,} malformed frame(s) (see bridge_dead_letters)."
    )
    console.print(
        f"Polygon simulator sent {result.polygon.messages_sent:,} trades, {result.polygon.extra['quotes']:,} quotes."
    )
    console.print(
        f"Benzinga simulator sent {result.benzinga.messages_sent:,} news messages (creations, updates, removals)"
        f" and {result.benzinga.bad_frames_sent:,} malformed one(s)."
    )
    console.print(quote_coverage(result.polygon_normalizer))
    console.print(f"options_flow grew by {added:,} rows.")
    console.print("\nQuery what was stored (works after the demo; starts the embedded database on demand):")
    console.print(f'  bridge query "{SAMPLE_QUERY}"', soft_wrap=True, highlight=False)
    console.print(
        '  bridge query "select feed, reason from bridge_dead_letters order by received_at desc limit 5"',
        soft_wrap=True,
        highlight=False,
    )


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
    from bridge.app.checks import run_checks

    settings = settings_from_env()
    console = Console()
    table = RichTable("variable", "value")
    for name, value in settings.describe():
        table.add_row(name, value)
    console.print(table)
    results = run_checks(settings)
    for name, ok, detail in results:
        console.print(f"{'[green]ok[/]' if ok else '[red]FAIL[/]'}  {name}: {REDACTOR.redact(detail)}")
    sys.exit(0 if all(ok for _, ok, _ in results) else EXIT_FAILED)


if __name__ == "__main__":
    main()
