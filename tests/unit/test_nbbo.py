"""The NBBO book against a plain model: the latest quote per contract, with no limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.domain.nbbo import NbboBook, Quote

MAX_IDLE_MS = 1000
MAX_STEP_MS = 200
UPDATES = st.lists(
    st.tuples(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=MAX_STEP_MS)),
    max_size=300,
)  # (contract, event time advanced by), 41 contracts


def replay(book: NbboBook, updates: list[tuple[int, int]]) -> tuple[dict[str, Quote], int]:
    """Feed ``updates`` to ``book``; return the model (the latest quote of every contract) and the last time."""
    model: dict[str, Quote] = {}
    now = 0
    for contract, step in updates:
        now += step
        name = f"C{contract}"
        book.update(name, 1.0, 1.1, now)
        model[name] = (1.0, 1.1, now)
        assert len(book) <= book.max_contracts
        assert book.usable(name, now, 0) == (1.0, 1.1, now)  # the quote just stored is never the one evicted
    return model, now


@settings(max_examples=300)
@given(UPDATES, st.integers(min_value=0, max_value=MAX_IDLE_MS // 2))
def test_recent_quotes_are_kept_and_idle_contracts_leave(updates: list[tuple[int, int]], max_age_ms: int) -> None:
    book = NbboBook(max_idle_ms=MAX_IDLE_MS, max_contracts=100)  # room for all 41: only idleness evicts
    model, now = replay(book, updates)
    for name, (bid, ask, at_ms) in model.items():
        expected = (bid, ask, at_ms) if now - at_ms <= max_age_ms else None
        assert book.usable(name, now, max_age_ms) == expected  # within half the idle time: always there
        if now - at_ms > MAX_IDLE_MS + 2 * MAX_STEP_MS:  # two rotations later at the latest
            assert book.usable(name, now, 10**9) is None
    assert len(book) <= sum(1 for _, _, at_ms in model.values() if now - at_ms <= MAX_IDLE_MS + 2 * MAX_STEP_MS)


@settings(max_examples=300)
@given(UPDATES, st.integers(min_value=1, max_value=20))
def test_the_book_never_holds_more_than_its_limit_and_keeps_the_most_recently_quoted(
    updates: list[tuple[int, int]], limit: int
) -> None:
    book = NbboBook(max_idle_ms=10**9, max_contracts=limit)  # nothing goes idle: only the limit evicts
    model, now = replay(book, updates)
    kept = {name for name in model if book.usable(name, now, 10**9) is not None}
    evicted = model.keys() - kept
    assert min(len(model), (limit + 1) // 2) <= len(kept) <= limit
    assert all(model[old][2] <= model[new][2] for old in evicted for new in kept)  # the least recent went
    assert book.evicted >= len(evicted)
