"""Unit tests of wa_gateway.pacing.RateLimiter (fake clock, plus one short real-time check)."""

from __future__ import annotations

import asyncio
import time

import pytest

from wa_gateway.pacing import RateLimiter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reserve_spaces_slots_one_interval_apart() -> None:
    limiter = RateLimiter(10.0, clock=FakeClock())
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_waits_shrink_as_time_passes() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    limiter.reserve()
    limiter.reserve()  # slot at +0.1
    clock.now += 0.15
    assert limiter.reserve() == pytest.approx(0.05)  # slot at +0.2


def test_a_limiter_idle_for_long_gives_the_next_slot_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    for _ in range(3):
        limiter.reserve()
    clock.now += 60
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.1)


def test_burst_allows_that_many_immediate_slots_then_paces() -> None:
    limiter = RateLimiter(10.0, burst=3, clock=FakeClock())
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])


def test_burst_refills_after_an_idle_period() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=3, clock=clock)
    for _ in range(5):
        limiter.reserve()
    clock.now += 10
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])


@pytest.mark.parametrize("burst", [0, -5])
def test_burst_below_one_is_treated_as_one(burst: int) -> None:
    limiter = RateLimiter(10.0, burst=burst, clock=FakeClock())
    assert [limiter.reserve() for _ in range(2)] == pytest.approx([0.0, 0.1])


def test_infinite_rate_never_waits() -> None:
    limiter = RateLimiter(float("inf"), clock=FakeClock())
    assert limiter.unlimited
    assert all(limiter.reserve() == 0.0 for _ in range(10_000))


def test_finite_rate_is_not_unlimited() -> None:
    assert not RateLimiter(1000.0).unlimited


async def test_infinite_rate_acquire_returns_at_once() -> None:
    limiter = RateLimiter(float("inf"))
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(1000)))
    assert time.monotonic() - started < 0.5


async def test_concurrent_acquires_are_paced_by_the_shared_limiter() -> None:
    rate, count = 200.0, 100
    limiter = RateLimiter(rate)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(count)))
    elapsed = time.monotonic() - started
    # the last of 100 slots is 99 intervals after the first: 0.495 s
    assert elapsed >= (count - 1) / rate - 0.01
    assert elapsed < 3.0  # loose: they sleep concurrently, not one after another


@pytest.mark.parametrize("rate", [0.0, -1.0, float("-inf")])
def test_rate_zero_or_negative_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate)
