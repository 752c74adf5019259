"""Batching and reconnection policies as plain values, so their arithmetic is tested without clocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class BatchPolicy:
    """Group commit: a writer with no write in flight writes what is waiting, up to ``max_rows``.

    ``max_ms`` (0 by default) makes it linger that long after the first row for a fuller batch;
    with group commit batches grow with the load by themselves, so lingering only adds latency.
    """

    max_rows: int = attrs.field(default=5000, validator=_positive)
    max_ms: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))

    @property
    def max_wait_s(self) -> float:
        return self.max_ms / 1000


@attrs.frozen
class Attempt:
    """What one run of a feed achieved, as the supervisor saw it."""

    delivered: bool = False
    """It authenticated (its hello finished) and then delivered at least one frame."""
    connected_for_s: float = 0.0
    """How long it stayed up after its hello finished (0 if it never got there)."""
    retry_after_s: float = 0.0
    """The least wait the source asked for (refused credentials, too many connections)."""


@attrs.frozen
class BackoffPolicy:
    """Exponential backoff with jitter and a cap, which grows only while attempts achieve nothing.

    Delay before retry ``n`` (0-based) is ``min(cap, initial * multiplier**n)``, of which the
    ``jitter`` fraction is randomised so that many pods restarting together spread out.

    For feeds (``after``): an attempt that delivered data was a success, so the next one starts at
    once (within ``reconnect_jitter_s``) and the count starts over: a server that drops every
    connection after a moment of data costs a reconnect each time, never a growing wait. Only
    consecutive attempts that delivered nothing back off. An attempt that stayed connected for
    ``reset_after_s`` without data (a quiet news stream) also starts the count over, at ``initial_s``.
    """

    initial_s: float = attrs.field(default=0.5, validator=_positive)
    max_s: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    jitter: float = attrs.field(
        default=0.5, validator=attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0))
    )
    reset_after_s: float = attrs.field(default=60.0, validator=_positive)
    reconnect_jitter_s: float = attrs.field(default=0.25, validator=attrs.validators.ge(0.0))
    """The most a reconnect after a productive attempt waits (spreads replicas dropped together)."""

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt``; ``random`` returns a float in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return base * (1 - self.jitter) + base * self.jitter * random()

    def after(self, failures: int, attempt: Attempt, random: Callable[[], float]) -> tuple[int, float]:
        """``(failures, delay_s)`` after ``attempt``: ``failures`` counts consecutive fruitless attempts.

        ``failures`` is the count before this attempt; the result is the count to pass next time
        and the seconds to wait before reconnecting.
        """
        if attempt.delivered:
            failures, delay = 0, self.reconnect_jitter_s * random()
        else:
            if attempt.connected_for_s >= self.reset_after_s:
                failures = 0
            failures, delay = failures + 1, self.delay(failures, random)
        return failures, max(attempt.retry_after_s, delay)
