"""Through a real PgBouncer in transaction mode (as Supabase's pooler on port 6543): the pipeline and migrations.

PgBouncer (Debian's ``pgbouncer``) is started by the test when it is installed; otherwise the test is
skipped and says why. Transaction pooling breaks server-side prepared statements and session state,
so many small batches are written to make sure neither is relied on.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge.adapters.postgres.migrations import migrate
from bridge.adapters.postgres.repository import open_repository, resolve_pool_mode
from bridge.adapters.replay import ReplayFeed
from bridge.app.pipeline import PipelineConfig, run_bridge
from bridge.app.service import normalizers, utc_now
from bridge.app.stats import PipelineStats
from bridge.domain.policies import BatchPolicy
from tests.integration.test_polygon import SESSION

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (Debian package 'pgbouncer'); transaction-pooler test skipped"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def bouncer_url(database_url: str) -> Iterator[str]:
    """``database_url`` reached through PgBouncer with ``pool_mode = transaction``."""
    assert PGBOUNCER is not None
    # pytest's tmp_path sits under a 0700 directory; PgBouncer refuses root and runs as nobody, who must read it
    with tempfile.TemporaryDirectory(prefix="bridge-pgbouncer-") as directory:
        yield from _bouncer(database_url, Path(directory))


def _bouncer(database_url: str, tmp_path: Path) -> Iterator[str]:
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "127.0.0.1")
    restore = None
    if host.startswith("/"):  # the embedded server's socket directory: let the pooler's user in
        restore = stat.S_IMODE(os.stat(host).st_mode)
        os.chmod(host, restore | 0o011)
    port = free_port()
    tmp_path.chmod(0o777)
    (tmp_path / "users.txt").write_text(f'"{params.get("user", "postgres")}" "{params.get("password", "")}"\n')
    config = tmp_path / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={params.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\nauth_file = {tmp_path / 'users.txt'}\n"
        "pool_mode = transaction\nunix_socket_dir =\nignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {tmp_path / 'pgbouncer.log'}\n"
    )
    for path in (config, tmp_path / "users.txt"):
        path.chmod(0o644)
    command = [PGBOUNCER, str(config)] if os.geteuid() else [PGBOUNCER, "-u", "nobody", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = make_conninfo(**{**params, "host": "127.0.0.1", "port": str(port)})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, prepare_threshold=None, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    log = (tmp_path / "pgbouncer.log").read_text() if (tmp_path / "pgbouncer.log").exists() else ""
                    pytest.fail(f"pgbouncer did not come up: {log[-500:]}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if restore is not None:
            os.chmod(host, restore)


async def test_the_pipeline_writes_through_a_transaction_pooler(bouncer_url: str, database_url: str) -> None:
    async def never() -> None:
        await trio.sleep_forever()

    config = PipelineConfig(batching=BatchPolicy(max_rows=1, max_ms=1))  # one statement per row: many repeats
    feed = ReplayFeed([SESSION, SESSION])
    with open_repository(bouncer_url, pool_mode="transaction", max_size=2) as repository:
        assert repository.stage_per_transaction
        stats = PipelineStats()
        assert await run_bridge([feed], repository, normalizers(), config, stats, utc_now, never)
    assert stats.write_failures.total() == 0 and stats.rows_rejected_by_database.total() == 0
    with psycopg.connect(database_url) as connection:
        assert connection.execute("select count(*) from options_flow").fetchone() == (6,)


def test_migrations_run_through_a_transaction_pooler(bouncer_url: str) -> None:
    with psycopg.connect(bouncer_url, autocommit=True, prepare_threshold=None) as connection:
        connection.execute("drop table if exists options_flow, news_events, broker_positions, broker_balances,"
                           " bridge_position_snapshots, broker_accounts, bridge_dead_letters,"
                           " bridge_schema_migrations")  # fmt: skip
    assert migrate(bouncer_url)[0] == "0001_stream_bridge_tables"
    assert migrate(bouncer_url) == []


def test_the_supabase_transaction_pooler_port_is_detected() -> None:
    assert resolve_pool_mode("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", "auto") == "transaction"
    assert resolve_pool_mode("postgresql://u:p@aws-0-eu.pooler.supabase.com:5432/postgres", "auto") == "direct"
    assert resolve_pool_mode("postgresql://u:p@db.x.supabase.co/postgres?sslmode=require", "session") == "session"
