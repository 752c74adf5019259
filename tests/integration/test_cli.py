"""The `bridge` command as an operator runs it: a real process, real PostgreSQL, a loopback stream."""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import psycopg
import trio

from bridge.adapters.embedded import open_embedded_postgres
from bridge.adapters.simulator.console import SentLog, serve_console_simulator
from bridge.app.registry import FEEDS
from bridge.domain.models import DATA_TABLES
from tests.integration.test_pipeline_postgres import good_frames, write_recording

BRIDGE = [sys.executable, "-m", "bridge"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def http_get(port: int, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await trio.to_thread.run_sync(get)


def clean_env(**variables: str) -> dict[str, str]:
    """The parent's environment without any bridge setting, plus ``variables``.

    ``BRIDGE_HOME`` is a fresh directory unless given: each process gets its own journal, so no test
    replays another one's frames.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "DATABASE_URL"}
    variables.setdefault("BRIDGE_HOME", tempfile.mkdtemp(prefix="bridge-home-"))
    return {**env, **variables}


def bridge(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_run_without_any_feed_names_what_to_set(tmp_path: Path) -> None:
    result = bridge("run", env=clean_env(BRIDGE_HOME=str(tmp_path)))
    assert result.returncode == 2
    assert "no feed configured" in result.stderr
    assert "BRIDGE_CONSOLE_URL" in result.stderr


def test_malformed_settings_are_all_named_in_one_message(tmp_path: Path) -> None:
    result = bridge("run", env=clean_env(BRIDGE_HOME=str(tmp_path), BRIDGE_BATCH_MAX_ROWS="lots",
                                         BRIDGE_LOG_FORMAT="xml", BRIDGE_CONSOLE_URL="ftp://x",
                                         BRIDGE_CONSOLE_TOKEN="tok-secret-1"))  # fmt: skip
    assert result.returncode == 2
    for expected in ("BRIDGE_BATCH_MAX_ROWS='lots'", "BRIDGE_LOG_FORMAT='xml'", "BRIDGE_CONSOLE_URL='ftp://x'"):
        assert expected in result.stderr
    assert "tok-secret-1" not in result.stderr + result.stdout


def test_migrate_against_an_unreachable_database_says_so_in_one_line() -> None:
    result = bridge("migrate", env=clean_env(DATABASE_URL="postgresql://bridge:pw-0f-bridge@127.0.0.1:1/postgres"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bridge: cannot reach the database at postgresql://bridge:***@127.0.0.1:1/postgres")
    assert "pw-0f-bridge" not in result.stderr + result.stdout


def test_replay_prints_a_summary(tmp_path: Path, database_url: str) -> None:
    recording = write_recording(tmp_path / "r.jsonl", [*good_frames(), good_frames()[0]])
    with recording.open("a") as file:
        file.write('{"at": "torn line\n')
    result = bridge("replay", str(recording), env=clean_env(DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    assert "replayed 6 frames from 1 file(s)" in result.stdout
    assert "1 invalid line(s) skipped" in result.stdout
    assert "options_flow" in result.stdout


async def test_run_ingests_a_stream_and_flushes_on_sigterm(tmp_path: Path, database_url: str) -> None:
    sent = SentLog()
    token = "console-t0ken-secret"
    output = tmp_path / "bridge.log"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(
            serve_console_simulator, token=token, messages_per_second=5000, batch_size=50, total_messages=3000,
            log=sent))  # fmt: skip
        port = free_port()
        env = clean_env(DATABASE_URL=database_url, BRIDGE_CONSOLE_URL=url, BRIDGE_CONSOLE_TOKEN=token,
                        BRIDGE_LOG_FORMAT="json", BRIDGE_BATCH_MAX_ROWS="1000000",
                        BRIDGE_BATCH_MAX_MS="600000", BRIDGE_HTTP_PORT=str(port),
                        BRIDGE_HTTP_HOST="127.0.0.1")  # fmt: skip
        with output.open("wb") as log_file:
            process = await trio.lowlevel.open_process([*BRIDGE, "run"], env=env, stdout=log_file, stderr=log_file)
            with trio.fail_after(60):
                while sent.messages_sent < 3000:
                    await trio.sleep(0.05)
                await trio.sleep(1.0)  # let the bridge read what is on the socket
                # nothing is committed yet: batches wait for size or time, both out of reach
                with psycopg.connect(database_url) as connection:
                    assert connection.execute("select count(*) from options_flow").fetchone() == (0,)
                assert await http_get(port, "/healthz") == (200, "ok\n")
                status, ready = await http_get(port, "/readyz")
                assert (status, orjson.loads(ready)["feeds"]) == (200, {"console": "connected"})
                status, metrics = await http_get(port, "/metrics")
                assert status == 200
                assert 'bridge_feed_connected{feed="console"} 1.0' in metrics
                assert f'bridge_frames_received_total{{feed="console"}} {float(sent.frames_sent)}' in metrics
                assert "bridge_pending_rows 3000.0" in metrics
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
        nursery.cancel_scope.cancel()
    text = output.read_text()
    assert code == 0, text
    with psycopg.connect(database_url) as connection:
        stored = connection.execute("select count(*) from options_flow").fetchone()
    assert stored == (sent.messages_by_table["options_flow"],)
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert any(line["event"] == "stop requested: stopping feeds and committing what they journaled" for line in lines)
    assert token not in text


async def test_record_writes_the_recording_format(tmp_path: Path) -> None:
    out = tmp_path / "console.jsonl"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_console_simulator, token="tok-rec", batch_size=3))
        env = clean_env(BRIDGE_CONSOLE_URL=url, BRIDGE_CONSOLE_TOKEN="tok-rec", BRIDGE_HOME=str(tmp_path))
        result = await trio.run_process(
            [*BRIDGE, "record", "--feed", "console", "--out", str(out), "--frames", "5"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    entries = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(entries) == 5
    assert all(set(entry) == {"at", "feed", "frame"} and entry["feed"] == "console" for entry in entries)
    assert len(orjson.loads(entries[0]["frame"])) == 3
    assert entries[0]["at"].endswith("Z")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_demo_runs_end_to_end_piped_and_reconciles_every_feed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = bridge("demo", "--duration", "5", "--rate", "3000",
                    env=clean_env(BRIDGE_HOME=str(home), DATABASE_URL="postgresql://nowhere:1/x"),
                    timeout=120)  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert f"Setting up the embedded PostgreSQL in {home / 'pgdata'} (first start" in out
    assert (home / "pgdata").is_dir()
    # piped: plain progress lines while it runs, before the summary
    progress = re.findall(r"^ +\d+s / 5s: ([\d,]+) frames received", out, re.MULTILINE)
    assert len(progress) >= 3, out
    assert out.index("frames received") < out.index("Per feed")
    # every feed's received frames are accounted for
    received = re.findall(r"^(\w+): sent ([\d,]+) frame\(s\), ([\d,]+) malformed on purpose.*\n"
                          r"  received ([\d,]+) = ([\d,]+) became rows \+ ([\d,]+) dead-lettered \+ ([\d,]+) no row"
                          r" \+ ([\d,]+) left in the journal$", out, re.MULTILINE)  # fmt: skip
    assert sorted(feed for feed, *_ in received) == sorted(FEEDS), out
    for feed, sent, malformed, total, rows, dead, none, left in received:
        assert _number(total) == _number(rows) + _number(dead) + _number(none) + _number(left), feed
        assert _number(dead) == _number(malformed), feed  # the simulators send nothing else that is bad
        assert _number(sent) > 0 and _number(total) > 0, feed
    # the rows each feed made add up to what each table's writer was given
    made: Counter[str] = Counter()
    for feed_rows in re.findall(r"^  rows made: (.*)$", out, re.MULTILINE):
        for table, count in re.findall(r"(\w+) ([\d,]+)(?: of| \(|,|$)", feed_rows):
            made[table] += _number(count)
    tables = re.findall(
        r"^(\w+): ([\d,]+) made → ([\d,]+) committed(.*); ([\d,]+) new or changed"
        r"(?:; ([\d,]+) repeated what was stored \([^)]*\))?; the table grew by ([\d,]+)",
        out,
        re.MULTILINE,
    )
    assert sorted(table for table, *_ in tables) == sorted(str(t) for t in DATA_TABLES), out
    with open_embedded_postgres(home) as url, psycopg.connect(url) as connection:
        for table, total, committed, _, written, repeated, grew in tables:
            assert made[table] == _number(total), table
            assert _number(committed) == _number(total), table  # nothing refused, nothing left at stop
            assert _number(committed) == _number(written) + _number(repeated or "0"), table
            stored = connection.execute(f"select count(*) from {table}").fetchone()
            assert stored == (_number(grew),), table  # a fresh BRIDGE_HOME: the table is what it grew by
    assert "Next:" in out and f"delete BRIDGE_HOME (rm -rf {home})" in out
    assert "bridge simulate polygon" in out and "DATABASE_URL" in out.split("Next:")[1]
    assert 'bridge query "select' in out
    query = bridge("query", "select count(*) > 1000 as plenty from options_flow", env=clean_env(BRIDGE_HOME=str(home)))
    assert query.returncode == 0, query.stderr
    assert "True" in query.stdout


async def test_check_reports_each_component(tmp_path: Path, database_url: str) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_console_simulator, token="good-token"))
        for token, ok in (("good-token", True), ("bad-token", False)):
            env = clean_env(DATABASE_URL=database_url, BRIDGE_CONSOLE_URL=url, BRIDGE_CONSOLE_TOKEN=token)
            result = await trio.run_process([*BRIDGE, "check"], env=env, capture_stdout=True, capture_stderr=True,
                                            check=False)  # fmt: skip
            out = result.stdout.decode()
            assert result.returncode == (0 if ok else 1), out
            assert "ok  database: PostgreSQL" in out and "schema up to date" in out
            expected = "ok  feed console: connected" if ok else "FAIL  feed console: credentials rejected (HTTP 401)"
            assert expected in out
            assert token not in out
        nursery.cancel_scope.cancel()


async def test_no_credential_reaches_any_log_line(tmp_path: Path, database_url: str) -> None:
    """A password in DATABASE_URL and a token that travels in a URL, through connection failures and retries."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    with_password = psycopg.conninfo.make_conninfo(**{**params, "password": "Pa55-w0rd-never-logged"})
    env = clean_env(DATABASE_URL=with_password, BRIDGE_BENZINGA_API_KEY="bz-token-never-logged",
                    BRIDGE_BENZINGA_URL=f"ws://127.0.0.1:{free_port()}/api/v1/news/stream",
                    BRIDGE_LOG_FORMAT="json", BRIDGE_LOG_LEVEL="debug", BRIDGE_HTTP_PORT="0")  # fmt: skip
    output = tmp_path / "bridge.log"
    with output.open("wb") as log_file:
        process = await trio.lowlevel.open_process([*BRIDGE, "run"], env=env, stdout=log_file, stderr=log_file)
        with trio.fail_after(30):  # until it has failed to connect and logged it (start-up time varies)
            while b"feed failed" not in output.read_bytes():
                await trio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
    text = output.read_text()
    assert "feed failed" in text  # the failure was logged...
    for secret in ("Pa55-w0rd-never-logged", "bz-token-never-logged"):
        assert secret not in text  # ...without the secrets


async def test_check_tries_a_brokers_rest_api_with_its_token(tmp_path: Path, database_url: str) -> None:
    from bridge.adapters.simulator.tradier import serve_tradier_simulator

    async with trio.open_nursery() as nursery:
        api = await nursery.start(functools.partial(serve_tradier_simulator, token="tr-ok"))
        for token, ok in (("tr-ok", True), ("tr-bad", False)):
            env = clean_env(DATABASE_URL=database_url, BRIDGE_TRADIER_TOKEN=token, BRIDGE_TRADIER_ACCOUNTS="VA000042",
                            BRIDGE_TRADIER_API_URL=api)  # fmt: skip
            result = await trio.run_process([*BRIDGE, "check"], env=env, capture_stdout=True, capture_stderr=True,
                                            check=False)  # fmt: skip
            out = result.stdout.decode()
            assert result.returncode == (0 if ok else 1), out
            expected = (
                "ok  feed tradier: the REST API accepted the token"
                if ok
                else "FAIL  feed tradier: credentials rejected"
            )
            assert expected in out and token not in out
        nursery.cancel_scope.cancel()


def test_check_masks_secrets_wherever_they_sit_and_shows_where_the_database_is(database_url: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    with_password = psycopg.conninfo.make_conninfo(**{**params, "password": "db-pw-never-shown"})
    closed = free_port()
    env = clean_env(DATABASE_URL=with_password, BRIDGE_BENZINGA_API_KEY="bz-key-never-shown",
                    BRIDGE_BENZINGA_URL=f"ws://127.0.0.1:{closed}/news?token=bz-query-never-shown&tickers=SPY",
                    BRIDGE_CONSOLE_URL=f"ws://127.0.0.1:{closed}/stream?token=console-query-never-shown",
                    BRIDGE_DB_POOL_MODE="session")  # fmt: skip
    result = bridge("check", env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # the feeds cannot be reached
    for secret in ("db-pw-never-shown", "bz-key-never-shown", "bz-query-never-shown", "console-query-never-shown"):
        assert secret not in out
    assert f"ws://127.0.0.1:{closed}/news?token=***&tickers=SPY" in out
    assert f"ws://127.0.0.1:{closed}/stream?token=***" in out
    described = next(line for line in out.splitlines() if line.startswith("database: host="))
    assert f"host={params['host']} port={params.get('port', 5432)} dbname={params['dbname']}" in described
    assert f"user={params['user']} pool mode=session" in described
    assert "ok  database: PostgreSQL" in out
    assert "FAIL  feed console: cannot connect" in out and "FAIL  feed benzinga: cannot connect" in out


def test_top_hands_the_metrics_url_and_interval_to_run_top_and_exits_with_its_code() -> None:
    # A stand-in for bridge.app.top, so the verb's wiring is tested whatever run_top shows.
    program = (
        "import sys, types\n"
        "top = types.ModuleType('bridge.app.top')\n"
        "top.run_top = lambda url, interval_s: print(url, interval_s) or 3\n"
        "sys.modules['bridge.app.top'] = top\n"
        "from bridge.app.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = clean_env(BRIDGE_HTTP_PORT="9123")
    default = subprocess.run([sys.executable, "-c", program, "top"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    assert (default.returncode, default.stdout) == (3, "http://127.0.0.1:9123/metrics 1.0\n"), default.stderr
    given = subprocess.run([sys.executable, "-c", program, "top", "--url", "http://h:1/metrics", "--interval", "0.5"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (given.returncode, given.stdout) == (3, "http://h:1/metrics 0.5\n"), given.stderr


async def test_run_logs_where_it_writes_and_a_progress_line(tmp_path: Path, database_url: str) -> None:
    """The start line says where rows and frames go (never the password); the progress line follows."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    with_password = psycopg.conninfo.make_conninfo(**{**params, "password": "start-line-pw-never-logged"})
    program = (  # `bridge run` itself, with the progress interval shortened from a minute
        "import sys\n"
        "import bridge.app.service as service\n"
        "service.PROGRESS_INTERVAL_S = 0.5\n"
        "from bridge.app.cli import main\n"
        "main(['run'])\n"
    )
    output = tmp_path / "bridge.log"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_console_simulator, token="tok-progress",
                                                    messages_per_second=500, batch_size=10))  # fmt: skip
        env = clean_env(DATABASE_URL=with_password, BRIDGE_CONSOLE_URL=url, BRIDGE_CONSOLE_TOKEN="tok-progress",
                        BRIDGE_LOG_FORMAT="json", BRIDGE_HTTP_PORT="0", BRIDGE_DB_POOL_MODE="session",
                        BRIDGE_HOME=str(tmp_path / "home"))  # fmt: skip
        with output.open("wb") as log_file:
            process = await trio.lowlevel.open_process([sys.executable, "-c", program], env=env, stdout=log_file,
                                                       stderr=log_file)  # fmt: skip
            with trio.fail_after(60):
                while '"progress"' not in output.read_text() or "frames/s" not in output.read_text():
                    await trio.sleep(0.1)
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
        nursery.cancel_scope.cancel()
    text = output.read_text()
    assert code == 0, text
    assert "start-line-pw-never-logged" not in text and "tok-progress" not in text
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    start = next(line for line in lines if line["event"] == "bridge starting")
    assert start["database"] == (
        f"host={params['host']} port={params.get('port', 5432)} dbname={params['dbname']}"
        f" user={params['user']} pool mode=session"
    )
    assert start["journal"] == str(tmp_path / "home" / "journal")
    assert start["feeds"] == ["console"]
    # the lines before the feed's lease is taken (half a second after start) list no feed
    progress = [line for line in lines if line["event"] == "progress" and line["feeds"]]
    assert progress and set(progress[0]["feeds"]) == {"console"}
    assert {"rows_committed", "commit_p99_s", "dead_letters", "blind_s", "interval_s"} <= set(progress[0])
