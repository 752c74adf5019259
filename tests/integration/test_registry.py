"""The registry is the one place that knows the vendors: everything else is derived from its specs."""

from __future__ import annotations

import attrs
import pytest
import trio

from bridge.app.registry import FEEDS, build_feed, build_normalizers, spec_for
from bridge.app.service import utc_now
from bridge.app.settings import Settings, feed_problems, known_variables, load_settings, selected_feeds
from bridge.app.simulate import export_lines
from bridge.app.vendors.base import Simulated, SimulatorOptions
from bridge.domain.normalizers.polygon import PolygonNormalizer


def test_the_six_feeds_in_their_documented_order() -> None:
    assert list(FEEDS) == ["console", "polygon", "benzinga", "tastytrade", "tradier", "schwab"]
    with pytest.raises(ValueError, match="unknown feed 'carrier-pigeon'; available: console, polygon"):
        spec_for("carrier-pigeon")


def test_every_vendor_variable_carries_its_vendors_prefix_and_is_named_once() -> None:
    names = known_variables()
    assert len(names) == len(set(names))
    for spec in FEEDS.values():
        for field in attrs.fields(spec.settings):
            assert spec.env_name(field) == f"BRIDGE_{spec.name.upper()}_{field.name.upper()}"


def test_every_feed_has_a_normalizer_and_the_polygon_one_takes_the_core_nbbo_settings() -> None:
    settings = load_settings({"BRIDGE_QUOTE_MAX_AGE_MS": "250", "BRIDGE_NBBO_MAX_CONTRACTS": "10"})
    normalizers = build_normalizers(settings)
    assert set(normalizers) == set(FEEDS)
    polygon = normalizers["polygon"]
    assert isinstance(polygon, PolygonNormalizer)
    assert polygon.quote_max_age_ms == 250
    assert build_normalizers(settings)["polygon"] is not polygon  # fresh: the NBBO book is per stream


@pytest.mark.parametrize("name", list(FEEDS))
async def test_each_simulator_yields_settings_that_select_its_feed_and_build_it(name: str) -> None:
    spec = FEEDS[name]
    async with trio.open_nursery() as nursery:
        running: Simulated[object] = await nursery.start(spec.simulator, SimulatorOptions(rate=10))
        settings = attrs.evolve(Settings(), vendors={**Settings().vendors, name: running.settings})
        assert selected_feeds(settings) == [name]
        assert feed_problems(settings, [name]) == []
        assert build_feed(name, settings, utc_now).name == name
        lines = export_lines(spec, running.settings)
        assert lines[0] == f"export BRIDGE_FEEDS={name}"
        assert all(line.startswith(f"export {spec.prefix}") for line in lines[1:])
        nursery.cancel_scope.cancel()


def test_what_a_feed_lacks_is_named_by_its_variable() -> None:
    settings = load_settings({"BRIDGE_FEEDS": "tastytrade,tradier", "BRIDGE_TRADIER_TOKEN": "t-1"})
    assert feed_problems(settings, selected_feeds(settings)) == [
        "BRIDGE_TASTYTRADE_ACCOUNTS is not set: the tastytrade feed needs the accounts to stream",
        "BRIDGE_TASTYTRADE_TOKEN or BRIDGE_TASTYTRADE_REFRESH_TOKEN is not set: the tastytrade feed needs an access"
        " token or a refresh token",
        "BRIDGE_TRADIER_ACCOUNTS is not set: the tradier feed needs the accounts to poll",
    ]
