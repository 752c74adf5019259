"""``bridge simulate NAME``: a real process serving one simulator, and the variables it prints reach it."""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from bridge.app.registry import FEEDS
from bridge.app.settings import load_settings, selected_feeds
from tests.integration.test_cli import BRIDGE, bridge, clean_env, free_port

# the variable holding each simulator's REST base, and that base's path (its port is the one asked for)
API_URLS = {"tastytrade": ("BRIDGE_TASTYTRADE_API_URL", ""), "tradier": ("BRIDGE_TRADIER_API_URL", "/v1"),
            "schwab": ("BRIDGE_SCHWAB_API_URL", "/trader/v1")}  # fmt: skip


def read_exports(process: subprocess.Popen[str]) -> dict[str, str]:
    """The ``export`` lines the simulator prints, up to its closing comment."""
    assert process.stdout is not None
    exports: dict[str, str] = {}
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = shlex.split(value)[0]
        if line.startswith("# then"):
            return exports
    raise AssertionError(f"the simulator ended without printing its variables: {exports}")


def free_port_pair() -> int:
    """A free port P whose neighbour P+1 is free too (a broker simulator's REST API and streamer)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise AssertionError("no two adjacent free ports on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def simulator(name: str, port: int) -> Iterator[dict[str, str]]:
    """``bridge simulate NAME --port PORT`` in a subprocess, yielding the variables it printed."""
    with subprocess.Popen([*BRIDGE, "simulate", name, "--port", str(port)], env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:  # fmt: skip
        try:
            yield read_exports(process)
        finally:
            process.terminate()
        assert process.wait(timeout=20) == 0


def streamer_url(name: str, exports: dict[str, str]) -> str:
    """Where the broker's streamer listens, as a client learns it: printed, or from the REST API."""
    if name == "tastytrade":
        return exports["BRIDGE_TASTYTRADE_URL"]
    api, token = exports[API_URLS[name][0]], exports[f"BRIDGE_{name.upper()}_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"}
    if name == "tradier":
        answer = httpx.post(f"{api}/accounts/events/session", headers=headers, timeout=10)
        assert answer.status_code == 200
        return str(answer.json()["stream"]["url"])
    answer = httpx.get(f"{api}/userPreference", headers=headers, timeout=10)
    assert answer.status_code == 200
    return str(answer.json()["streamerInfo"][0]["streamerSocketUrl"])


@pytest.mark.parametrize("name", ["polygon", "tastytrade", "tradier", "schwab"])
def test_the_printed_variables_point_a_client_at_the_simulator_on_the_chosen_port(name: str) -> None:
    port = free_port() if name == "polygon" else free_port_pair()
    with simulator(name, port) as exports:
        if name == "polygon":
            assert exports["BRIDGE_POLYGON_URL"] == f"ws://127.0.0.1:{port}/options"
        else:
            variable, path = API_URLS[name]
            assert exports[variable] == f"http://127.0.0.1:{port}{path}"
        settings = load_settings(exports)  # the printed variables are valid settings...
        assert selected_feeds(settings) == [name]
        spec = FEEDS[name]
        vendor = settings.vendors[name]
        assert spec.problems(vendor) == []
        # ...and what they name accepts the bridge: the probe `bridge check` uses logs in with them
        assert trio.run(spec.probe, vendor) == (f"feed {name}", True, spec_ok_detail(name))
        if name != "polygon":  # the streamer is on the next port, and answers
            url = streamer_url(name, exports)
            assert url.startswith(f"ws://127.0.0.1:{port + 1}/")
            trio.run(check_streamer, name, url, exports.get("BRIDGE_TASTYTRADE_TOKEN"))


async def check_streamer(name: str, url: str, token: str | None) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            if name == "tastytrade":  # the streamer logs the client in with the printed token
                await ws.send_message(orjson.dumps({"action": "connect", "auth-token": token, "value": []}).decode())
                assert orjson.loads(await ws.get_message())["status"] == "ok"


def spec_ok_detail(name: str) -> str:
    return "connected and the API key was accepted" if name == "polygon" else "the REST API accepted the token"


@pytest.mark.parametrize(("name", "taken"), [("polygon", 0), ("schwab", 0), ("tastytrade", 1)])
def test_a_taken_port_is_one_clear_line_naming_it(name: str, taken: int) -> None:
    port = free_port_pair()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + taken))
        holder.listen()
        result = bridge("simulate", name, "--port", str(port), env=clean_env())
    assert result.returncode == 1
    assert result.stderr == f"bridge: cannot listen on 127.0.0.1:{port + taken}: Address already in use\n"
