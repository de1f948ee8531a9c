"""The backoff every retry in the system waits (runtime.retries.backoff_s)."""
import pytest

from runtime.retries import MAX_RETRY_COUNTDOWN_S, backoff_s


def test_each_retry_waits_twice_as_long_up_to_the_cap() -> None:
    assert [backoff_s(0.5, n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(1, 10) == MAX_RETRY_COUNTDOWN_S


@pytest.mark.parametrize("retries", [1023, 1024, 100_000])
def test_a_step_retrying_for_ever_keeps_waiting_the_cap(retries: int) -> None:
    # a persistent compensation may retry for days; a float power would overflow past 1023
    assert backoff_s(1, retries) == MAX_RETRY_COUNTDOWN_S


def test_jitter_spreads_retries_over_the_whole_interval() -> None:
    waits = [backoff_s(1, 3, jitter=True) for _ in range(200)]
    assert all(0 <= w <= 8 for w in waits)
    assert min(waits) < 2 and max(waits) > 6  # spread, not bunched at the top
