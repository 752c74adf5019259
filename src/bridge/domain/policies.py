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
class BackoffPolicy:
    """Exponential backoff with jitter and a cap; a run that stayed healthy long enough starts over.

    Delay before retry ``n`` (0-based) is ``min(cap, initial * multiplier**n)``, of which the
    ``jitter`` fraction is randomised so that many pods restarting together spread out.
    """

    initial_s: float = attrs.field(default=0.5, validator=_positive)
    max_s: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    jitter: float = attrs.field(
        default=0.5, validator=attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0))
    )
    reset_after_s: float = attrs.field(default=60.0, validator=_positive)

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt``; ``random`` returns a float in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return base * (1 - self.jitter) + base * self.jitter * random()

    def attempt_after(self, attempt: int, healthy_for_s: float) -> int:
        """The retry number to use after a run that stayed up ``healthy_for_s`` seconds then failed."""
        return 0 if healthy_for_s >= self.reset_after_s else attempt
