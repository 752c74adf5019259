"""What the operator sees when the environment is wrong: one line, the variable to fix, the right exit code.

Exit codes: 0 success, 1 a runtime failure, 2 invalid configuration. Every test runs the real command.
"""

from __future__ import annotations

import functools
import socket
import time
from pathlib import Path

import psycopg
import trio

from bridge.adapters.simulator.console import serve_console_simulator
from tests.integration.test_cli import BRIDGE, bridge, clean_env


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_malformed_database_url_is_a_configuration_error_without_its_password() -> None:
    result = bridge("migrate", env=clean_env(DATABASE_URL="postgresql://bridge:pw-n0t-shown@db.example.com:port/x"))
    assert result.returncode == 2
    assert "DATABASE_URL=(value hidden): has a port that is not a number" in result.stderr
    assert "pw-n0t-shown" not in result.stderr + result.stdout


def test_a_misspelt_variable_is_named_with_the_nearest_setting(tmp_path: Path) -> None:
    result = bridge("run", env=clean_env(BRIDGE_HOME=str(tmp_path), BRIDGE_POLYGON_APIKEY="k-123456",
                                         BRIDGE_BATCH_MAX_ROWS="1.5"))  # fmt: skip
    assert result.returncode == 2
    assert (
        "bridge: warning: BRIDGE_POLYGON_APIKEY is not a setting of this bridge and is ignored;"
        " did you mean BRIDGE_POLYGON_API_KEY?" in result.stderr
    )
    assert "BRIDGE_BATCH_MAX_ROWS='1.5': must be a whole number" in result.stderr
    assert "k-123456" not in result.stderr


def test_an_unusable_bridge_home_is_one_line_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a directory")
    result = bridge("run", env=clean_env(BRIDGE_HOME=str(home), BRIDGE_CONSOLE_URL="ws://127.0.0.1:9/stream"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"bridge: BRIDGE_HOME={home}: the embedded PostgreSQL in {home}/pgdata did not start:")
    assert "Not a directory" in line


def test_an_unreachable_database_is_one_line_with_the_url_and_the_cause() -> None:
    """For the verbs that need the database now (``bridge run`` journals through an outage instead)."""
    result = bridge("migrate", env=clean_env(DATABASE_URL="postgresql://bridge:pw-0f-run@127.0.0.1:1/postgres"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("bridge: cannot reach the database at postgresql://bridge:***@127.0.0.1:1/postgres: ")
    assert "Connection refused" in line
    assert "pw-0f-run" not in result.stderr + result.stdout


def test_a_taken_http_port_is_one_line_naming_the_variable_and_the_port(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = bridge("run", env=clean_env(DATABASE_URL=database_url, BRIDGE_CONSOLE_URL="ws://127.0.0.1:9/stream",
                                             BRIDGE_HTTP_PORT=str(port), BRIDGE_HTTP_HOST="127.0.0.1",
                                             BRIDGE_LOG_LEVEL="error"))  # fmt: skip
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"bridge: cannot listen on 127.0.0.1:{port} (BRIDGE_HTTP_PORT={port}, BRIDGE_HTTP_HOST=")
    assert "already in use" in line


def test_replaying_a_file_of_invalid_lines_fails_and_says_why(tmp_path: Path, database_url: str) -> None:
    recording = tmp_path / "garbage.jsonl"
    recording.write_text('not json\n{"at": "torn\n')
    result = bridge("replay", str(recording), env=clean_env(DATABASE_URL=database_url, BRIDGE_LOG_LEVEL="error"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"bridge: nothing replayed: all 2 line(s) are invalid ({recording} line 1: ")
    with psycopg.connect(database_url) as connection:
        assert connection.execute("select count(*) from bridge_dead_letters").fetchone() == (0,)


async def test_recording_with_a_refused_token_gives_up_at_once_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "console.jsonl"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve_console_simulator, token="right-token"))
        env = clean_env(BRIDGE_CONSOLE_URL=url, BRIDGE_CONSOLE_TOKEN="wrong-token", BRIDGE_HOME=str(tmp_path),
                        BRIDGE_LOG_LEVEL="error")  # fmt: skip
        started = time.monotonic()
        with trio.fail_after(30):  # not the feed's five-minute wait
            result = await trio.run_process([*BRIDGE, "record", "--feed", "console", "--out", str(out),
                                             "--frames", "5"], env=env, capture_stdout=True, capture_stderr=True,
                                            check=False)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    line = one_line(result.stderr.decode())
    assert line.startswith("bridge: credentials refused by console: ")
    assert "401" in line
    assert "wrong-token" not in line
    assert "recorded" not in result.stdout.decode()


async def test_a_second_bridge_on_the_same_journal_refuses_to_start_naming_the_directory(
    tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "home"
    env = clean_env(DATABASE_URL=database_url, BRIDGE_CONSOLE_URL="ws://127.0.0.1:9/stream", BRIDGE_HTTP_PORT="0",
                    BRIDGE_HOME=str(home), BRIDGE_LOG_LEVEL="error")  # fmt: skip
    first = await trio.lowlevel.open_process([*BRIDGE, "run"], env=env)
    try:
        with trio.fail_after(30):
            while not (home / "journal" / "lock").exists():
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # the lock is taken right after the file appears
        result = await trio.to_thread.run_sync(functools.partial(bridge, "run", env=env))
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert line == (f"bridge: the journal directory {home / 'journal'} is in use by another bridge process;"
                        " give each process its own BRIDGE_JOURNAL_DIR")  # fmt: skip
    finally:
        first.kill()
        await first.wait()
