"""``bridge simulate NAME``: a real process serving one simulator, and the variables it prints reach it."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import trio

from bridge.app.registry import FEEDS
from bridge.app.settings import load_settings, selected_feeds
from tests.integration.test_cli import BRIDGE, bridge, clean_env, free_port


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


@pytest.mark.parametrize("name", ["polygon", "tradier"])
def test_the_printed_variables_point_a_client_at_the_running_simulator(name: str) -> None:
    port = free_port() if name == "polygon" else 0  # the broker simulators pick their own ports
    with subprocess.Popen([*BRIDGE, "simulate", name, "--port", str(port)], env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:  # fmt: skip
        try:
            exports = read_exports(process)
            if port:
                assert exports["BRIDGE_POLYGON_URL"] == f"ws://127.0.0.1:{port}/options"
            settings = load_settings(exports)  # the printed variables are valid settings...
            assert selected_feeds(settings) == [name]
            spec = FEEDS[name]
            vendor = settings.vendors[name]
            assert spec.problems(vendor) == []
            # ...and what they name accepts the bridge: the probe `bridge check` uses logs in with them
            assert trio.run(spec.probe, vendor) == (f"feed {name}", True, spec_ok_detail(name))
        finally:
            process.terminate()
        assert process.wait(timeout=20) == 0


def spec_ok_detail(name: str) -> str:
    return "connected and the API key was accepted" if name == "polygon" else "the REST API accepted the token"


def test_a_fixed_port_is_refused_for_a_simulator_that_picks_its_own() -> None:
    result = bridge("simulate", "schwab", "--port", "9000", env=clean_env())
    assert result.returncode == 2
    assert "the schwab simulator picks its own ports on 127.0.0.1" in result.stderr
