"""Token buckets: per-provider send pacing and per-API-key request limits.

WhatsApp numbers get banned when they burst: one RateLimiter per provider is shared
by every prefetched message, so the pace holds however many messages the worker
holds; waiting tasks sleep, they don't spin. The gateway uses the same bucket to
refuse (429) a client over its limit instead of making it wait.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class RateLimiter:
    """Token bucket: at most `rate` sends per second, with bursts of up to `burst`."""

    def __init__(
        self, rate: float, *, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._next_free = -math.inf

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.rate)

    def _next_slot(self) -> tuple[float, float]:
        """(the earliest free slot, now): a full bucket lets `burst` slots start now."""
        now = self._clock()
        return max(self._next_free, now - (self.burst - 1) / self.rate), now

    def reserve(self) -> float:
        """Take the next slot; return how long the caller must wait for it."""
        if self.unlimited:
            return 0.0
        slot, now = self._next_slot()
        self._next_free = slot + 1.0 / self.rate
        return max(0.0, slot - now)

    def try_take(self) -> float:
        """Take a slot only if it is free now; else return seconds until one is."""
        if self.unlimited:
            return 0.0
        slot, now = self._next_slot()
        if slot > now:
            return slot - now
        self._next_free = slot + 1.0 / self.rate
        return 0.0

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
