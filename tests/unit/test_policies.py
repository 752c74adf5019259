import pytest

from bridge.domain.policies import BackoffPolicy, BatchPolicy


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = BackoffPolicy(initial_s=1, max_s=10, multiplier=2, jitter=0)
    assert [policy.delay(n, lambda: 0.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]


def test_jitter_spreads_delays_within_the_jitter_fraction() -> None:
    policy = BackoffPolicy(initial_s=4, max_s=100, multiplier=2, jitter=0.5)
    assert policy.delay(0, lambda: 0.0) == 2.0
    assert policy.delay(0, lambda: 0.999) == pytest.approx(3.998)


def test_a_long_healthy_run_resets_the_backoff() -> None:
    policy = BackoffPolicy(reset_after_s=60)
    assert policy.attempt_after(5, healthy_for_s=61) == 0
    assert policy.attempt_after(5, healthy_for_s=3) == 5


def test_policies_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchPolicy(max_rows=0)
    with pytest.raises(ValueError):
        BackoffPolicy(jitter=2)
