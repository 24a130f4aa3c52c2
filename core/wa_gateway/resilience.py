"""What to do after a failed send: classify it, pick a retry tier, trip a breaker.

Providers only say "transient" or "permanent"; everything about timing lives here,
so one policy serves every provider and the tests can drive it with a fake clock.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .provider import PermanentError, ProviderError, TransientError

log = logging.getLogger(__name__)

UNEXPECTED_ERROR_CAP = 3
"""Attempts after which an error the provider did not classify counts as permanent."""


@dataclass(frozen=True)
class Failure:
    """A classified failure with the provider's own words kept for the operator."""

    permanent: bool
    reason: str
    retry_after: float | None = None
    provider_status: int | None = None
    provider_code: str | None = None


def classify(exc: BaseException, *, attempts: int) -> Failure:
    """Map any exception from a provider's send to a Failure.

    `attempts` counts this failure too. Exceptions that are not ProviderErrors are
    bugs or surprises: they are retried like transient errors, but only
    UNEXPECTED_ERROR_CAP times, so a broken plugin cannot keep a message forever.
    """
    if isinstance(exc, PermanentError):
        return Failure(True, str(exc), None, exc.provider_status, exc.provider_code)
    if isinstance(exc, TransientError):
        return Failure(False, str(exc), exc.retry_after, exc.provider_status, exc.provider_code)
    if isinstance(exc, ProviderError):
        return Failure(False, str(exc), None, exc.provider_status, exc.provider_code)
    reason = f"unexpected {type(exc).__name__}: {exc}"
    return Failure(attempts >= UNEXPECTED_ERROR_CAP, reason)


def pick_retry_tier(
    delays: Sequence[float], attempts: int, retry_after: float | None = None
) -> int | None:
    """Index of the retry queue for the `attempts`-th failure, or None when exhausted.

    The n-th failure waits in tier n-1; a provider's retry-after moves it up to the
    first tier that waits at least that long (the last tier if none does).
    """
    if attempts < 1:
        raise ValueError("attempts counts failures: it starts at 1")
    if attempts > len(delays):
        return None
    tier = attempts - 1
    if retry_after is not None:
        while tier < len(delays) - 1 and delays[tier] < retry_after:
            tier += 1
    return tier


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `threshold` consecutive transient failures; one probe after `cooldown`.

    While open, the worker stops consuming so messages wait in the work queue
    instead of burning their retries against a provider that is down.
    """

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._listeners: list[Callable[[CircuitBreaker], None]] = [on_change] if on_change else []
        self._state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.remaining_cooldown() == 0:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def remaining_cooldown(self) -> float:
        if self._state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        """May a send go to the provider now? In half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Count a transient failure (permanent ones say nothing about availability)."""
        self.consecutive_failures += 1
        probe_failed = self._state is BreakerState.HALF_OPEN
        self._probing = False
        if probe_failed or (
            self._state is BreakerState.CLOSED and self.consecutive_failures >= self.threshold
        ):
            self.opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def subscribe(self, listener: Callable[[CircuitBreaker], None]) -> None:
        """Call `listener(breaker)` after every state change (the consumer pauses on it)."""
        self._listeners.append(listener)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        log.warning("circuit breaker %s: %s -> %s", self.name, self._state.value, state.value)
        self._state = state
        for listener in self._listeners:
            listener(self)

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "retry_in": round(self.remaining_cooldown(), 1),
        }
