"""``bridge top`` against a real HTTP server serving the bridge's metrics text."""

from __future__ import annotations

import functools
import io
import socket

import pytest
import trio

from bridge.adapters.http import Request, Response, serve_http
from bridge.adapters.memory import MemoryRepository
from bridge.app.health import http_routes
from bridge.app.stats import FeedState, PipelineStats
from bridge.app.top import run_top
from bridge.domain.models import Table


async def test_top_prints_one_plain_line_per_interval_without_a_terminal(nursery: trio.Nursery) -> None:
    stats = PipelineStats()
    stats.feed_state["console"] = FeedState.CONNECTED
    metrics = http_routes(stats, {}, MemoryRepository())["/metrics"]
    scrapes = 0

    async def counting(request: Request) -> Response:
        nonlocal scrapes
        scrapes += 1
        stats.frames_received["console"] += 100  # the bridge moves on between scrapes
        stats.rows_committed[Table.OPTIONS_FLOW] += 100
        return await metrics(request)

    port = await nursery.start(functools.partial(serve_http, {"/metrics": counting}, port=0, host="127.0.0.1"))
    out = io.StringIO()
    code = await trio.to_thread.run_sync(functools.partial(run_top, f"127.0.0.1:{port}", 0.2, out=out, max_scrapes=3))
    assert code == 0
    lines = out.getvalue().splitlines()
    assert scrapes == 3
    assert len(lines) == 3
    assert lines[0].startswith("feeds: console connected - frames/s dead=0 blind=0s lease=- | rows/s: options_flow -")
    for line in lines[1:]:
        rate = float(line.split("console connected ")[1].split(" ")[0])
        assert 100 / 0.6 < rate < 100 / 0.19, line  # 100 frames in about 0.2 s


async def test_ctrl_c_quits_with_0(nursery: trio.Nursery) -> None:
    routes = {"/metrics": http_routes(PipelineStats(), {}, MemoryRepository())["/metrics"]}
    port = await nursery.start(functools.partial(serve_http, routes, port=0, host="127.0.0.1"))

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    code = await trio.to_thread.run_sync(
        functools.partial(run_top, f"http://127.0.0.1:{port}/", 1.0, out=out, sleep=interrupted)
    )
    assert (code, len(out.getvalue().splitlines())) == (0, 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_bridge_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert run_top(f"127.0.0.1:{port}", 1.0, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"bridge top: cannot read http://127.0.0.1:{port}/metrics: ConnectError: ")
    assert "refused" in err


async def test_a_server_that_is_not_a_bridge_is_one_line_and_exit_1(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    async def teapot(request: Request) -> Response:
        return Response(418, b"no\n")

    port = await nursery.start(functools.partial(serve_http, {"/metrics": teapot}, port=0, host="127.0.0.1"))
    code = await trio.to_thread.run_sync(functools.partial(run_top, f"127.0.0.1:{port}", 1.0, out=io.StringIO()))
    assert code == 1
    assert capsys.readouterr().err == f"bridge top: cannot read http://127.0.0.1:{port}/metrics: HTTP 418\n"
