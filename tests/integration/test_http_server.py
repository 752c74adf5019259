"""The HTTP server on a real socket: nothing a route or a client does reaches the nursery it shares."""

from __future__ import annotations

import functools
import socket

import hypothesis
import pytest
import trio
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bridge.adapters.http import HttpPortInUse, Request, Response, Route, serve_http


async def ok(request: Request) -> Response:
    return Response(200, b"fine\n")


async def broken(request: Request) -> Response:
    raise KeyError("the route's own bug")


async def echo(request: Request) -> Response:
    return Response(200, request.method.encode() + b" " + request.body)


ROUTES: dict[str, Route] = {"/ok": ok, "/broken": broken, "/echo": echo}


async def exchange(port: int, data: bytes, *, close_after_send: bool = False, half_close: bool = False) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if close_after_send:
            return b""
        if half_close:
            await stream.send_eof()
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def test_a_raising_route_answers_500_and_neither_the_server_nor_its_sibling_stops() -> None:
    beats = 0

    async def pipeline() -> None:  # stands for the ingestion sharing the nursery
        nonlocal beats
        while True:
            beats += 1
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline)
        port = await nursery.start(functools.partial(serve_http, ROUTES, port=0, host="127.0.0.1"))
        with capture_logs() as logs:
            answer = await exchange(port, get("/broken"))
            assert answer.startswith(b"HTTP/1.1 500 ")
            assert answer.endswith(b"internal error\n")
            assert (await exchange(port, get("/broken"))).startswith(b"HTTP/1.1 500 ")
        errors = [entry for entry in logs if entry["log_level"] == "error"]
        assert [(e["event"], e["path"], e["exc_info"]) for e in errors] == [("http route failed", "/broken", True)] * 2
        assert (await exchange(port, get("/ok"))).endswith(b"\r\n\r\nfine\n")
        before = beats
        await trio.sleep(0.1)
        assert beats > before  # the sibling still runs
        nursery.cancel_scope.cancel()


@pytest.fixture
async def port(nursery: trio.Nursery) -> int:
    bound: int = await nursery.start(
        functools.partial(serve_http, ROUTES, port=0, host="127.0.0.1", connection_deadline_s=0.5)
    )
    return bound


async def test_garbage_bytes_answer_400(port: int) -> None:
    answer = await exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert (await exchange(port, get("/ok"))).startswith(b"HTTP/1.1 200 ")


async def test_an_oversized_request_head_is_refused_not_read_forever(port: int) -> None:
    head = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 40_000 + b"\r\n\r\n"
    answer = await exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_half_a_request_then_close_leaves_the_server_serving(port: int) -> None:
    with capture_logs() as logs:
        await exchange(port, b"GET /ok HTTP/1.1\r\nHo", close_after_send=True)
        await exchange(port, b"POST /ok HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", close_after_send=True)
        await trio.sleep(0.05)
    assert [entry for entry in logs if entry["log_level"] != "debug"] == []
    assert (await exchange(port, get("/ok"))).startswith(b"HTTP/1.1 200 ")


async def test_a_client_that_stalls_is_cut_off_at_the_deadline(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /ok HTTP/1.1\r\n")  # and nothing more
        started = trio.current_time()
        with trio.fail_after(3):
            assert await stream.receive_some(1024) == b""  # the server closed it
        assert 0.4 < trio.current_time() - started < 2
    assert (await exchange(port, get("/ok"))).startswith(b"HTTP/1.1 200 ")


async def test_a_client_that_resets_mid_response_costs_only_its_connection(port: int) -> None:
    with capture_logs() as logs:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.sendall(get("/ok"))
            sock.close()
        await trio.sleep(0.05)
    assert [entry for entry in logs if entry["log_level"] != "debug"] == []
    assert (await exchange(port, get("/ok"))).startswith(b"HTTP/1.1 200 ")


async def test_a_request_body_reaches_the_route_and_an_oversized_one_is_refused(port: int) -> None:
    form = b"grant_type=refresh_token&refresh_token=abc"
    answer = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(form), form))
    assert answer.endswith(b"\r\n\r\nPOST " + form)
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert (await exchange(port, chunked)).endswith(b"\r\n\r\nPOST abcde")
    big = 2 * 1024 * 1024
    answer = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_unknown_paths_and_methods(port: int) -> None:
    assert (await exchange(port, get("/nope"))).startswith(b"HTTP/1.1 404 ")
    assert (await exchange(port, b"DELETE /ok HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    head = await exchange(port, b"HEAD /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.endswith(b"\r\n\r\n")  # no body


async def test_a_port_in_use_is_a_named_error_before_started() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        async with trio.open_nursery() as nursery:
            with pytest.raises(HttpPortInUse) as raised:
                await nursery.start(functools.partial(serve_http, ROUTES, port=number, host="127.0.0.1"))
    assert raised.value.port == number
    assert str(raised.value) == f"cannot listen on 127.0.0.1:{number} for HTTP: the port is already in use"


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    st.one_of(
        st.binary(min_size=1, max_size=300),
        st.builds(
            lambda method, target, tail: method + b" " + target + b" HTTP/1.1\r\n" + tail,
            st.sampled_from([b"GET", b"HEAD", b"POST", b"G\x00T", b""]),
            st.binary(max_size=40),
            st.binary(max_size=200),
        ),
    )
)
def test_hostile_bytes_get_an_answer_or_a_close_and_the_server_keeps_serving(data: bytes) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_http, ROUTES, port=0, host="127.0.0.1", connection_deadline_s=0.2)
            )
            answer = await exchange(port, data, half_close=True)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer
            assert (await exchange(port, get("/ok"))).startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()

    trio.run(main)
