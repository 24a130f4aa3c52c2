"""Delivering one notification: pick a route, send with short in-process retries, fall back.

A route is a provider with its breaker and pacer. The primary serves a message when
it can; the fallback takes over a permanent refusal it can serve, or an open
breaker. What happens next (ack, retry queue, dead letter) is `outcomes`' job.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .metrics import Metrics
from .models import Notification
from .pacing import RateLimiter
from .provider import PermanentError, Provider, ProviderError, Receipt, TransientError
from .resilience import BreakerState, CircuitBreaker, Failure, classify

BLIP_ATTEMPTS = 3
"""Sends tried in-process (with jittered backoff) before a message goes to a retry queue."""
BLIP_FIRST_WAIT = 0.2
"""Seconds (jittered up to twice that) before the first in-process retry."""
BLIP_MAX_WAIT = 2.0
"""Longest in-process wait; a provider asking for more gets a retry queue instead."""


@dataclass
class Route:
    """A provider with its breaker and pacer: one way a message can go out."""

    provider: Provider
    breaker: CircuitBreaker
    pacer: RateLimiter
    channel: str = "default"

    @property
    def name(self) -> str:
        """The provider's name (the channel is `channel`)."""
        return self.provider.name

    def refusal(self, notification: Notification) -> str | None:
        """Why this provider can never send the message, or None: the one run-time check."""
        media = notification.media
        return self.provider.capabilities.refusal(
            notification.target.kind, notification.caption, media.kind if media is not None else None
        )


@dataclass(frozen=True)
class Sent:
    receipt: Receipt
    template: str | None = None
    """The template it went out as, when the text was refused outside the 24-hour window."""


@dataclass(frozen=True)
class Failed:
    route: Route
    failure: Failure


@dataclass(frozen=True)
class Unservable:
    """No configured provider can ever send it (queued under another configuration)."""

    provider: str
    reason: str


@dataclass(frozen=True)
class NoRouteNow:
    """Every provider that could send it has its breaker open: it should wait in the queue."""


Outcome = Sent | Failed | Unservable | NoRouteNow


def outside_window(provider: Provider, failure: Failure) -> bool:
    """The provider refused free-form text: the recipient has not written in 24 hours."""
    return failure.permanent and failure.provider_code is not None and failure.provider_code in provider.window_codes


def window_advice(notification: Notification, provider: str, failure: Failure) -> str:
    """The dead letter's reason when no template can stand in for the text."""
    if notification.event is None:
        fix = f"send it as an event with a template_{provider}"
    else:
        fix = f"configure a template for event {notification.event} (template_{provider} in the events file)"
    return f"outside the 24-hour window: {fix}; {failure.reason}"


def template_name(template: dict[str, object]) -> str:
    """How the timeline names a rendered template: Meta's name, Twilio's content SID …"""
    for key in ("name", "content_sid"):
        if isinstance(template.get(key), str):
            return str(template[key])
    return "the event's template"


def is_blip(exc: BaseException) -> bool:
    """Worth another try in a moment: a short transient error, or an unexpected one.

    Never a cancellation (a stopping worker), nor anything else outside Exception, nor
    an ambiguous error: the provider may have accepted that message, so each quick try
    could deliver one more copy; it waits for the next retry tier instead.
    """
    if isinstance(exc, TransientError):
        if exc.ambiguous:
            return False
        return exc.retry_after is None or exc.retry_after <= BLIP_MAX_WAIT
    return isinstance(exc, Exception) and not isinstance(exc, ProviderError)


class Delivery:
    """Routes and sends; never acks, retries through queues or dead-letters."""

    def __init__(self, primary: Route, fallback: Route | None, metrics: Metrics) -> None:
        self.primary = primary
        self.fallback = fallback
        self.metrics = metrics

    @property
    def routes(self) -> list[Route]:
        return [r for r in (self.primary, self.fallback) if r is not None]

    async def deliver(self, notification: Notification, attempts: int) -> Outcome:
        """Send once (with blips retried); `attempts` counts the earlier failed attempts."""
        capable = [r for r in self.routes if r.refusal(notification) is None]
        if not capable:
            return Unservable(self.primary.name, f"provider {self.primary.name!r} {self.primary.refusal(notification)}")
        route = next((r for r in capable if r.breaker.allow()), None)
        if route is None:
            return NoRouteNow()
        try:
            return Sent(await self._send(route, notification))
        except Exception as exc:  # noqa: BLE001 - classify() turns any failure into a Failure
            failure = classify(exc, attempts=attempts + 1)
        if outside_window(route.provider, failure) and not notification.use_template:
            return await self._as_template(route, notification, failure, attempts)
        fallback = self._fallback_for(route, notification, failure)
        if fallback is None:
            return Failed(route, failure)
        try:
            return Sent(await self._send(fallback, notification))
        except Exception as exc:  # noqa: BLE001 - as above
            return Failed(fallback, classify(exc, attempts=attempts + 1))

    async def _as_template(
        self, route: Route, notification: Notification, failure: Failure, attempts: int
    ) -> Outcome:
        """The text was refused outside the 24-hour window: send the event's template for
        this provider, once; without one, say what to configure."""
        template = notification.templates.get(route.provider.name)
        if template is None:
            return Failed(route, replace(failure, reason=window_advice(notification, route.provider.name, failure)))
        try:
            receipt = await self._send(route, notification.model_copy(update={"use_template": True}))
        except Exception as exc:  # noqa: BLE001 - as in deliver
            return Failed(route, classify(exc, attempts=attempts + 1))
        return Sent(receipt, template=template_name(template))

    def _fallback_for(self, route: Route, notification: Notification, failure: Failure) -> Route | None:
        """The fallback takes over a permanent refusal it can serve, or an open breaker."""
        fallback = self.fallback
        if fallback is None or route is fallback or fallback.refusal(notification) is not None:
            return None
        if failure.permanent or route.breaker.state is not BreakerState.CLOSED:
            return fallback if fallback.breaker.allow() else None
        return None

    async def _send(self, route: Route, notification: Notification) -> Receipt:
        """One send, then short in-process retries for blips, feeding the breaker.

        The retry machinery is only built after a first failure: most sends succeed,
        and the hot path stays one awaited call.
        """
        def may_retry(exc: BaseException) -> bool:
            return is_blip(exc) and route.breaker.state is BreakerState.CLOSED

        try:
            return await self._attempt(route, notification)
        except Exception as exc:
            if not may_retry(exc):
                raise
        await asyncio.sleep(random.uniform(BLIP_FIRST_WAIT, 2 * BLIP_FIRST_WAIT))
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(BLIP_ATTEMPTS - 1),
            wait=wait_exponential_jitter(multiplier=2 * BLIP_FIRST_WAIT, max=BLIP_MAX_WAIT, jitter=BLIP_FIRST_WAIT),
            retry=retry_if_exception(may_retry),
            reraise=True,
        ):
            with attempt:
                return await self._attempt(route, notification)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _attempt(self, route: Route, notification: Notification) -> Receipt:
        await route.pacer.acquire()
        started = time.perf_counter()
        outcome = "sent"
        try:
            receipt = await route.provider.send(notification)
        except PermanentError:
            outcome = "permanent"
            route.breaker.record_success()  # the provider is up; it said no
            raise
        except Exception:
            outcome = "transient"
            route.breaker.record_failure()
            raise
        finally:
            metrics = self.metrics
            metrics.child(metrics.provider_seconds, route.channel, route.name, outcome).observe(
                time.perf_counter() - started
            )
        route.breaker.record_success()
        return receipt
