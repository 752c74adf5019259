"""Deterministic ids: the fast path must give exactly the standard UUIDv5, or ids would change between versions."""

from __future__ import annotations

import uuid

import pytest

from bridge.domain.ids import BRIDGE_NAMESPACE, id_of_text, stable_id


@pytest.mark.parametrize(
    "parts",
    [
        ("polygon", "O:SPY261127C00600000", 301, 1795185000123, 17),
        ("polygon", "O:SPXW261127P06000000", 302, 0, None),
        ("news", "Zürich — €", ""),
        ("t",),
    ],
)
def test_stable_id_is_the_standard_uuid5_of_the_joined_parts(parts: tuple[object, ...]) -> None:
    kind, *rest = parts
    text = "\x1f".join([str(kind), *("" if part is None else str(part) for part in rest)])
    made = stable_id(str(kind), *rest)
    assert made == uuid.uuid5(BRIDGE_NAMESPACE, text)
    assert made.version == 5 and made.variant == uuid.RFC_4122


def test_ids_made_fast_behave_as_ordinary_uuids() -> None:
    made = stable_id("polygon", "O:SPY261127C00600000", 301)
    same = uuid.UUID(str(made))
    assert made == same and hash(made) == hash(same) and made.int == same.int
    assert str(made) == str(same) and made.is_safe is same.is_safe
    assert {made: 1}[same] == 1 and sorted([made, same]) == [same, made]
    assert id_of_text("polygon\x1fO:SPY261127C00600000\x1f301") == made


def test_different_parts_give_different_ids() -> None:
    assert stable_id("polygon", "A", 1) != stable_id("polygon", "A", 2) != stable_id("polygon", "A1")
