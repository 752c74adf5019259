"""Keeps one child task running: restarts it after a failure, with jittered exponential backoff.

Each child runs in its own cancel scope, so one feed failing (or being restarted) never disturbs
its siblings; cancellation of the surrounding scope is the only way to stop it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio

from bridge.app.stats import FeedState, PipelineStats
from bridge.domain.policies import BackoffPolicy
from bridge.domain.ports import RetryLater
from bridge.logs import get_logger

log = get_logger(__name__)


def _innermost(exc: BaseException) -> BaseException:
    """A feed with tasks of its own fails with a one-exception group: report the exception inside."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_supervised(
    name: str,
    child: Callable[[], Awaitable[None]],
    backoff: BackoffPolicy,
    stats: PipelineStats,
    *,
    restart_when_finished: bool = True,
    rng: Callable[[], float] = random.random,
) -> None:
    """Run ``child`` forever (or until it finishes, for finite sources), restarting it on failure."""
    attempt = 0
    while True:
        started = trio.current_time()
        stats.feed_state[name] = FeedState.STARTING
        try:
            with trio.CancelScope():
                await child()
        except Exception as raised:  # a failing feed must not take the others down
            exc = _innermost(raised)
            error = f"{type(exc).__name__}: {exc}"
            stats.feed_last_error[name] = error
            log.warning("feed failed", feed=name, error=error)
            floor_s = exc.retry_after_s if isinstance(exc, RetryLater) else 0.0
        else:
            if not restart_when_finished:
                stats.feed_state[name] = FeedState.FINISHED
                return
            log.info("feed stream ended; reconnecting", feed=name)
            floor_s = 0.0
        attempt = backoff.attempt_after(attempt, trio.current_time() - started)
        delay = max(floor_s, backoff.delay(attempt, rng))
        attempt += 1
        stats.feed_state[name] = FeedState.BACKOFF
        stats.feed_restarts[name] += 1
        log.info("feed restarting", feed=name, delay_s=round(delay, 3), attempt=attempt)
        await trio.sleep(delay)
