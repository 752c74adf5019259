"""What a vendor brings to the bridge: one ``FeedSpec`` holding everything the app needs to know about it.

A spec is plain data: the vendor's settings class (its variables are ``BRIDGE_<NAME>_<FIELD>``), and
factories for its feed, its normalizer, its ``bridge check`` probe and its built-in simulator. The
entry points (``bridge run``, ``demo``, ``check``, ``simulate``) go through the registry of specs, so
none of them names a vendor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs
import trio
from attrs import AttrsInstance

from bridge.adapters.simulator.server import SentLog
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

S = TypeVar("S", bound=AttrsInstance)

CheckResult = tuple[str, bool, str]
"""(what was tried, whether it worked, the detail shown to the operator: never a secret)."""


@attrs.frozen
class SimulatorOptions:
    """How ``bridge demo`` / ``bridge simulate`` want a simulator to run."""

    host: str = "127.0.0.1"
    port: int = 0
    rate: float = 2000.0
    """The demo's message rate; each simulator scales its own from it (news is slower than trades)."""
    seed: int = 0
    start: datetime | None = None


@attrs.frozen
class Simulated(Generic[S]):
    """A running simulator: the vendor settings that point the bridge at it, and what it has sent."""

    settings: S
    log: SentLog


class ServeSimulator(Protocol[S]):
    async def __call__(
        self, options: SimulatorOptions, *, task_status: trio.TaskStatus[Simulated[S]] = ...
    ) -> None: ...


@attrs.frozen
class FeedSpec(Generic[S]):
    """One vendor, in one place.

    ``settings`` is an attrs class whose fields are declared with ``setting(...)``; its variables are
    ``BRIDGE_<NAME>_<FIELD>`` unless a field names its own. ``build_feed`` and ``build_normalizer``
    get the vendor's settings and the core ones (shared knobs such as ``BRIDGE_MAX_SILENCE_S``).
    ``simulator`` serves a local stand-in on ``SimulatorOptions.host``/``port`` (one with a second socket,
    a streamer beside its REST API, puts that on the next port).
    """

    name: str
    settings: type[S]
    build_feed: Callable[[S, Settings, Clock], Feed]
    build_normalizer: Callable[[S, Settings], Normalizer]
    probe: Callable[[S], Awaitable[CheckResult]]
    simulator: ServeSimulator[S]
    summarize_sent: Callable[[SentLog], str] | None = None
    describe_normalizer: Callable[[Normalizer], str | None] = lambda _: None
    extra_problems: Callable[[S], Sequence[str]] = lambda _: ()

    @property
    def prefix(self) -> str:
        return f"BRIDGE_{self.name.upper()}_"

    def env_name(self, field: attrs.Attribute[Any]) -> str:
        return str(field.metadata.get("env") or f"{self.prefix}{field.name.upper()}")

    def selected(self, vendor: S) -> bool:
        """Whether the feed runs by default (``BRIDGE_FEEDS`` unset): a selecting setting is set."""
        return any(getattr(vendor, f.name) for f in attrs.fields(self.settings) if f.metadata.get("selects"))

    def selectors(self) -> list[str]:
        return [self.env_name(f) for f in attrs.fields(self.settings) if f.metadata.get("selects")]

    def problems(self, vendor: S) -> list[str]:
        """What is missing for this feed to run, one sentence per variable."""
        missing = [
            f"{self.env_name(f)} is not set: the {self.name} feed needs {f.metadata['needed']}"
            for f in attrs.fields(self.settings)
            if f.metadata.get("needed") and not getattr(vendor, f.name)
        ]
        return [*missing, *self.extra_problems(vendor)]
