"""Unit tests of wa_gateway.resilience: classification, retry tiers, circuit breaker."""

from __future__ import annotations

import pytest

from wa_gateway.provider import PermanentError, ProviderError, TransientError
from wa_gateway.resilience import (
    UNEXPECTED_ERROR_CAP,
    BreakerState,
    CircuitBreaker,
    classify,
    pick_retry_tier,
)

DELAYS = (5.0, 30.0, 120.0, 600.0, 3600.0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- classify ---------------------------------------------------------------------------


def test_permanent_error_is_permanent_and_keeps_provider_status_and_code() -> None:
    failure = classify(
        PermanentError("recipient not on WhatsApp", provider_status=400, provider_code=131026),
        attempts=1,
    )
    assert failure.permanent is True
    assert failure.reason == "recipient not on WhatsApp"
    assert failure.provider_status == 400
    assert failure.provider_code == "131026"
    assert failure.retry_after is None


def test_transient_error_is_retried_and_keeps_retry_after_status_and_code() -> None:
    failure = classify(
        TransientError("slow down", provider_status=429, provider_code="rate", retry_after=42.0),
        attempts=1,
    )
    assert failure.permanent is False
    assert failure.reason == "slow down"
    assert failure.retry_after == 42.0
    assert failure.provider_status == 429
    assert failure.provider_code == "rate"


def test_transient_error_stays_transient_however_many_attempts() -> None:
    failure = classify(TransientError("502"), attempts=UNEXPECTED_ERROR_CAP * 10)
    assert failure.permanent is False


def test_bare_provider_error_counts_as_transient_with_its_status() -> None:
    failure = classify(ProviderError("odd", provider_status=503), attempts=1)
    assert failure.permanent is False
    assert failure.provider_status == 503


@pytest.mark.parametrize("attempts", range(1, UNEXPECTED_ERROR_CAP))
def test_unexpected_exception_is_transient_below_the_cap(attempts: int) -> None:
    failure = classify(KeyError("boom"), attempts=attempts)
    assert failure.permanent is False
    assert failure.retry_after is None
    assert failure.provider_status is None and failure.provider_code is None


@pytest.mark.parametrize("attempts", [UNEXPECTED_ERROR_CAP, UNEXPECTED_ERROR_CAP + 1])
def test_unexpected_exception_becomes_permanent_at_the_cap(attempts: int) -> None:
    assert classify(RuntimeError("bug"), attempts=attempts).permanent is True


def test_unexpected_exception_reason_names_its_type_and_message() -> None:
    reason = classify(ZeroDivisionError("division by zero"), attempts=1).reason
    assert "ZeroDivisionError" in reason
    assert "division by zero" in reason


# --- pick_retry_tier --------------------------------------------------------------------


@pytest.mark.parametrize("attempts", range(1, len(DELAYS) + 1))
def test_nth_failure_waits_in_tier_n_minus_one(attempts: int) -> None:
    assert pick_retry_tier(DELAYS, attempts) == attempts - 1


def test_failure_after_the_last_tier_is_exhausted() -> None:
    assert pick_retry_tier(DELAYS, len(DELAYS) + 1) is None
    assert pick_retry_tier(DELAYS, len(DELAYS) + 1, retry_after=1.0) is None


def test_no_retry_tiers_means_the_first_failure_is_exhausted() -> None:
    assert pick_retry_tier((), 1) is None


@pytest.mark.parametrize(
    ("attempts", "retry_after", "tier"),
    [
        (1, 1.0, 0),  # shorter than the tier's own delay: stays
        (1, 5.0, 0),  # equal: stays
        (1, 6.0, 1),  # first tier that waits at least that long
        (1, 30.0, 1),
        (1, 60.0, 2),
        (2, 601.0, 4),
        (3, 10.0, 2),  # never moves down
    ],
)
def test_retry_after_moves_up_to_the_first_tier_that_waits_long_enough(
    attempts: int, retry_after: float, tier: int
) -> None:
    assert pick_retry_tier(DELAYS, attempts, retry_after) == tier


def test_retry_after_longer_than_every_tier_is_capped_at_the_last_tier() -> None:
    assert pick_retry_tier(DELAYS, 1, retry_after=86400.0) == len(DELAYS) - 1


# --- CircuitBreaker ---------------------------------------------------------------------


def make_breaker(
    clock: FakeClock, *, threshold: int = 3, cooldown: float = 30.0
) -> tuple[CircuitBreaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "watzap",
        threshold=threshold,
        cooldown=cooldown,
        clock=clock,
        on_change=lambda b: changes.append(b.state),
    )
    return breaker, changes


def test_breaker_starts_closed_and_allows_sends() -> None:
    breaker, changes = make_breaker(FakeClock())
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(10))
    assert changes == []


def test_breaker_opens_after_threshold_consecutive_transient_failures() -> None:
    breaker, changes = make_breaker(FakeClock(), threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]


def test_open_breaker_refuses_sends_until_the_cooldown_is_over() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, threshold=1, cooldown=30.0)
    breaker.record_failure()
    assert not breaker.allow()
    clock.advance(29.9)
    assert not breaker.allow()
    assert breaker.state is BreakerState.OPEN


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker, changes = make_breaker(FakeClock(), threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert changes == []


def test_breaker_is_half_open_after_cooldown_and_allows_exactly_one_probe() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock, threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(30.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False
    assert breaker.allow() is False
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_successful_probe_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock, threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(31.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(5))
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probe_reopens_the_breaker_with_a_fresh_cooldown() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock, threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(45.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.remaining_cooldown() == pytest.approx(30.0)
    assert not breaker.allow()
    clock.advance(29.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()  # the next single probe
    assert not breaker.allow()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
    ]


def test_on_change_receives_the_breaker_itself() -> None:
    seen: list[CircuitBreaker] = []
    breaker = CircuitBreaker("meta", threshold=1, clock=FakeClock(), on_change=seen.append)
    breaker.record_failure()
    assert seen == [breaker]


def test_breaker_without_on_change_works() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("meta", threshold=1, cooldown=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_snapshot_reports_state_failures_and_seconds_until_the_probe() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, threshold=2, cooldown=30.0)
    assert breaker.snapshot() == {"state": "closed", "consecutive_failures": 0, "retry_in": 0.0}
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(10.04)
    assert breaker.snapshot() == {"state": "open", "consecutive_failures": 2, "retry_in": 20.0}
    clock.advance(20.0)
    assert breaker.snapshot() == {"state": "half_open", "consecutive_failures": 2, "retry_in": 0.0}
