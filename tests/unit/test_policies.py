import pytest

from bridge.domain.policies import Attempt, BackoffPolicy, BatchPolicy


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, multiplier=2, jitter=0)
    assert [policy.delay(n, lambda: 0.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]


def test_jitter_spreads_delays_within_the_jitter_fraction() -> None:
    policy = BackoffPolicy(initial_s=4, max_s=100, multiplier=2, jitter=0.5)
    assert policy.delay(0, lambda: 0.0) == 2.0
    assert policy.delay(0, lambda: 0.999) == pytest.approx(3.998)


def test_after_an_attempt_that_delivered_data_the_reconnect_is_immediate() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, jitter=0, reconnect_jitter_s=0.25)
    assert policy.after(5, Attempt(delivered=True, connected_for_s=0.75), lambda: 0.0) == (0, 0.0)
    assert policy.after(5, Attempt(delivered=True, connected_for_s=0.75), lambda: 0.999) == (0, pytest.approx(0.24975))


def test_fruitless_attempts_back_off_from_the_initial_delay() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, jitter=0)
    failures, delays = 0, []
    for _ in range(6):
        failures, delay = policy.after(failures, Attempt(), lambda: 0.0)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 10, 10] and failures == 6


def test_a_long_quiet_connection_starts_the_count_over() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, jitter=0, reset_after_s=60)
    assert policy.after(5, Attempt(connected_for_s=61), lambda: 0.0) == (1, 1)
    assert policy.after(5, Attempt(connected_for_s=3), lambda: 0.0) == (6, 10)


def test_the_source_may_ask_for_a_longer_wait() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, jitter=0)
    assert policy.after(0, Attempt(retry_after_s=300), lambda: 0.0) == (1, 300)
    assert policy.after(0, Attempt(delivered=True, retry_after_s=60), lambda: 0.0) == (0, 60)


def test_policies_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchPolicy(max_rows=0)
    with pytest.raises(ValueError):
        BackoffPolicy(jitter=2)
    with pytest.raises(ValueError):
        BackoffPolicy(reconnect_jitter_s=-1)
