"""The feed supervisor on trio's virtual clock: readiness, and reconnect delays after each kind of attempt."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from bridge.app.stats import FeedState, PipelineStats
from bridge.app.supervisor import run_supervised, supervise_feed
from bridge.domain.models import ReceivedFrame
from bridge.domain.policies import BackoffPolicy
from bridge.domain.ports import FrameSink, RetryLater
from tests.unit.fakes import T0

POLICY = BackoffPolicy(initial_s=1, max_s=8, multiplier=2, jitter=0, reconnect_jitter_s=0.25)


def frame(text: str = "[]") -> ReceivedFrame:
    return ReceivedFrame("test", T0, text)


@attrs.define
class Sink:
    frames: list[ReceivedFrame] = attrs.Factory(list)
    connects: int = 0

    def connected(self, feed: str) -> None:
        self.connects += 1

    async def emit(self, frame: ReceivedFrame) -> None:
        self.frames.append(frame)


Behaviour = Callable[[int, FrameSink], Awaitable[None]]
"""What attempt number ``n`` (0-based) of a fake child does with its sink before it fails."""


async def productive(n: int, sink: FrameSink) -> None:
    """Says hello (one status frame), connects, delivers data for 0.75 s, then the server closes."""
    await sink.emit(frame('{"status": "auth_success"}'))
    sink.connected("test")
    for _ in range(3):
        await trio.sleep(0.25)
        await sink.emit(frame())
    raise ConnectionError("closed by the server")


async def unproductive(n: int, sink: FrameSink) -> None:
    """Connects and says hello, then the server closes before any data."""
    await sink.emit(frame('{"status": "auth_success"}'))  # a hello frame: not data
    await trio.sleep(0.1)
    sink.connected("test")
    await trio.sleep(0.1)
    raise ConnectionError("closed by the server")


async def refused(n: int, sink: FrameSink) -> None:
    raise RetryLater("the server refused the credentials (HTTP 401)", retry_after_s=300)


async def attempt_times(behaviour: Behaviour | list[Behaviour], attempts: int, rng: float = 0.5) -> list[float]:
    """Start times of the first ``attempts`` attempts of a child behaving as told."""
    starts: list[float] = []
    behaviours = behaviour if isinstance(behaviour, list) else [behaviour] * attempts

    async def run(sink: FrameSink) -> None:
        starts.append(trio.current_time())
        n = len(starts) - 1
        if n == attempts - 1:
            await trio.sleep_forever()
        await behaviours[n](n, sink)

    with trio.move_on_after(100_000):
        await supervise_feed("test", run, Sink(), POLICY, PipelineStats(), rng=lambda: rng)
    assert len(starts) == attempts
    return starts


def gaps(starts: list[float]) -> list[float]:
    return [round(later - earlier, 6) for earlier, later in itertools.pairwise(starts)]


async def test_a_productive_attempt_reconnects_at_once_every_time(autojump_clock: trio.testing.MockClock) -> None:
    # each attempt lasts 0.75 s; the wait after it is only the jitter: 0.5 of 0.25 s, never growing
    assert gaps(await attempt_times(productive, 12)) == [0.875] * 11


async def test_the_reconnect_jitter_is_at_most_a_quarter_second(autojump_clock: trio.testing.MockClock) -> None:
    assert gaps(await attempt_times(productive, 3, rng=0.999999)) == [pytest.approx(0.75 + 0.25, abs=1e-5)] * 2
    assert gaps(await attempt_times(productive, 3, rng=0.0)) == [0.75] * 2


async def test_unproductive_attempts_back_off_exponentially_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # each attempt lasts 0.2 s; then 1, 2, 4, 8, 8 s (jitter 0)
    assert gaps(await attempt_times(unproductive, 6)) == [1.2, 2.2, 4.2, 8.2, 8.2]


async def test_an_attempt_that_fails_before_connecting_backs_off(autojump_clock: trio.testing.MockClock) -> None:
    async def fails(n: int, sink: FrameSink) -> None:
        raise OSError("connection refused")

    assert gaps(await attempt_times(fails, 5)) == [1, 2, 4, 8]


async def test_jitter_spreads_the_backoff_within_its_fraction(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def run(sink: FrameSink) -> None:
        starts.append(trio.current_time())
        raise OSError("connection refused")

    policy = BackoffPolicy(initial_s=2, max_s=8, jitter=0.5)
    with trio.move_on_after(30):
        await supervise_feed("test", run, Sink(), policy, PipelineStats(), rng=lambda: 0.5)
    # base 2, 4, 8, 8: half fixed, half times 0.5 of jitter
    assert gaps(starts)[:4] == [1.5, 3.0, 6.0, 6.0]


async def test_data_starts_the_backoff_over(autojump_clock: trio.testing.MockClock) -> None:
    script = [unproductive, unproductive, unproductive, productive, unproductive, unproductive, unproductive]
    assert gaps(await attempt_times(script, 7)) == [1.2, 2.2, 4.2, 0.875, 1.2, 2.2]


async def test_refused_credentials_keep_their_long_wait(autojump_clock: trio.testing.MockClock) -> None:
    assert gaps(await attempt_times(refused, 4)) == [300, 300, 300]


async def test_a_refusal_after_data_still_waits_long(autojump_clock: trio.testing.MockClock) -> None:
    async def delivers_then_refused(n: int, sink: FrameSink) -> None:
        sink.connected("test")
        await sink.emit(frame())
        raise RetryLater("too many connections (HTTP 429)", retry_after_s=60)

    assert gaps(await attempt_times(delivers_then_refused, 3)) == [60, 60]


async def test_a_long_quiet_connection_starts_the_backoff_over_at_its_initial_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def quiet(n: int, sink: FrameSink) -> None:
        sink.connected("test")
        await trio.sleep(61)
        raise ConnectionError("closed")

    script = [unproductive, unproductive, unproductive, quiet, unproductive]
    assert gaps(await attempt_times(script, 5)) == [1.2, 2.2, 4.2, 61 + 1]


async def test_connected_is_task_status_started(autojump_clock: trio.testing.MockClock) -> None:
    stats = PipelineStats()
    sink = Sink()
    seen: list[FeedState | None] = []

    async def run(attempt_sink: FrameSink) -> None:
        await trio.sleep(1)
        seen.append(stats.feed_state.get("test"))
        attempt_sink.connected("test")
        attempt_sink.connected("test")  # a second report (REST snapshot, then the stream) is harmless
        await trio.sleep(0.001)
        seen.append(stats.feed_state.get("test"))
        await attempt_sink.emit(frame())

    await supervise_feed("test", run, sink, POLICY, stats, restart_when_finished=False)
    assert seen == [FeedState.STARTING, FeedState.CONNECTED]
    assert stats.feed_state["test"] == FeedState.FINISHED
    assert sink.connects == 2 and len(sink.frames) == 1


async def test_a_finite_source_that_never_connects_finishes(autojump_clock: trio.testing.MockClock) -> None:
    stats = PipelineStats()

    async def empty(sink: FrameSink) -> None:
        await trio.lowlevel.checkpoint()

    await supervise_feed("test", empty, Sink(), POLICY, stats, restart_when_finished=False)
    assert stats.feed_state["test"] == FeedState.FINISHED


async def test_a_feed_with_tasks_of_its_own_reports_the_error_inside(autojump_clock: trio.testing.MockClock) -> None:
    stats = PipelineStats()

    async def run(sink: FrameSink) -> None:
        sink.connected("test")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise ConnectionError("closed by the server")

    with trio.move_on_after(0.5):
        await supervise_feed("test", run, Sink(), POLICY, stats)
    assert stats.feed_last_error["test"] == "ConnectionError: closed by the server"
    assert stats.feed_state["test"] == FeedState.BACKOFF and stats.feed_restarts["test"] == 1


async def test_a_child_bound_to_its_own_sink_is_judged_by_its_stats(autojump_clock: trio.testing.MockClock) -> None:
    stats = PipelineStats()
    starts: list[float] = []
    deliver = [False, False, True, False]

    async def child() -> None:
        n = len(starts)
        starts.append(trio.current_time())
        if n == len(deliver):
            await trio.sleep_forever()
        stats.feed_state["test"] = FeedState.CONNECTED  # what the child's own sink does
        if deliver[n]:
            stats.frames_received["test"] += 1
        raise ConnectionError("closed")

    with trio.move_on_after(1000):
        await run_supervised("test", child, POLICY, stats, rng=lambda: 0.5)
    assert gaps(starts) == [1, 2, 0.125, 1]
