"""The registry: every vendor the bridge supports, by feed name.

Adding a vendor is its adapter and normalizer modules, a module in ``bridge.app.vendors`` ending in a
``FeedSpec``, and one line here. Settings, ``bridge run``, ``replay``, ``check``, ``demo`` and
``simulate`` all read this mapping and name no vendor themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from bridge.app.vendors import benzinga, console, polygon, schwab, tastytrade, tradier
from bridge.app.vendors.base import FeedSpec
from bridge.domain.ports import Clock, Feed, Normalizer

if TYPE_CHECKING:
    from bridge.app.settings import Settings

FEEDS: Final[Mapping[str, FeedSpec[Any]]] = {
    spec.name: spec for spec in (console.SPEC, polygon.SPEC, benzinga.SPEC, tastytrade.SPEC, tradier.SPEC, schwab.SPEC)
}
"""In the order ``bridge check`` reports them and ``BRIDGE_FEEDS`` lists them in messages."""


def spec_for(name: str) -> FeedSpec[Any]:
    try:
        return FEEDS[name]
    except KeyError:
        raise ValueError(f"unknown feed {name!r}; available: {', '.join(FEEDS)}") from None


def build_feed(name: str, settings: Settings, clock: Clock) -> Feed:
    """The feed ``name`` as configured (its settings must be complete: see ``feed_problems``)."""
    spec = spec_for(name)
    return spec.build_feed(settings.vendors[name], settings, clock)


def build_normalizers(settings: Settings) -> dict[str, Normalizer]:
    """One normalizer per feed name frames carry (live or recorded), fresh: some keep per-stream state."""
    return {name: spec.build_normalizer(settings.vendors[name], settings) for name, spec in FEEDS.items()}
