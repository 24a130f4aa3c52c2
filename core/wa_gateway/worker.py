"""The consumer: take a message, send it through the provider, then ack, retry or dead-letter.

Every hand-over is at-least-once: a message moved to a retry tier or to the dead
queue is acked only after RabbitMQ confirmed the new copy. Nothing sleeps for long
while holding a prefetch slot: long waits are the retry queues' TTLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .broker import CONNECTION_ERRORS, BrokerUnavailable
from .logs import bind_notification
from .models import DeliveryStatus, Notification
from .pacing import RateLimiter
from .provider import PermanentError, Provider, ProviderError, Receipt, TransientError
from .resilience import BreakerState, CircuitBreaker, Failure, classify, pick_retry_tier
from .services import Services

log = logging.getLogger(__name__)

BLIP_ATTEMPTS = 3
"""Sends tried in-process (with jittered backoff) before a message goes to a retry queue."""
BLIP_FIRST_WAIT = 0.2
"""Seconds (jittered up to twice that) before the first in-process retry."""
BLIP_MAX_WAIT = 2.0
"""Longest in-process wait; a provider asking for more gets a retry queue instead."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Route:
    """A provider with its breaker and pacer: one way a message can go out."""

    provider: Provider
    breaker: CircuitBreaker
    pacer: RateLimiter

    @property
    def name(self) -> str:
        return self.provider.name

    def can_serve(self, notification: Notification) -> bool:
        return self.provider.capabilities.refusal(notification.target.kind, notification.text) is None


def _is_blip(exc: BaseException) -> bool:
    """Worth another try in a moment: a short transient error, or an unexpected one.

    Never a cancellation (a stopping worker), nor anything else outside Exception.
    """
    if isinstance(exc, TransientError):
        return exc.retry_after is None or exc.retry_after <= BLIP_MAX_WAIT
    return isinstance(exc, Exception) and not isinstance(exc, ProviderError)


class Worker:
    """Consumes the work queue with `WA_WORKER_PREFETCH` messages in flight at once."""

    def __init__(
        self, services: Services, provider: Provider, *, fallback: Provider | None = None
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.topology = services.topology
        self.metrics = services.metrics
        self.primary = self._route(provider)
        self.fallback = self._route(fallback) if fallback is not None else None
        self.prefetch = self.settings.wa_worker_prefetch
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._consuming_prefetch = 0
        self._control = asyncio.Lock()
        self._resume_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._control_tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def _route(self, provider: Provider) -> Route:
        rate = self.settings.wa_send_rate or provider.capabilities.send_rate
        breaker = self.services.breaker(provider.name)
        return Route(provider, breaker, RateLimiter(rate))

    # -- consuming -------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for RabbitMQ, then consume. Returns once the consumer is registered."""
        await self.services.broker.wait_connected()
        self._channel = await self.services.broker.channel()
        self._queue = await self._channel.declare_queue(
            self.topology.work, durable=True, arguments=self.topology.work_arguments()
        )
        await self._consume(self.prefetch)
        log.info(
            "worker consuming %s with prefetch %d via %s",
            self.topology.work,
            self.prefetch,
            self.primary.name + (f" (fallback {self.fallback.name})" if self.fallback else ""),
        )

    async def _consume(self, prefetch: int) -> None:
        async with self._control:
            assert self._channel is not None and self._queue is not None
            if self._stopping:
                return
            if self._consumer_tag is not None:
                if self._consuming_prefetch == prefetch:
                    return
                await self._queue.cancel(self._consumer_tag)
            await self._channel.set_qos(prefetch_count=prefetch)
            self._consumer_tag = await self._queue.consume(self._on_message)
            self._consuming_prefetch = prefetch

    async def _pause(self) -> None:
        """Stop taking messages while no route is open; resume with one probe later."""
        async with self._control:
            if self._consumer_tag is not None and self._queue is not None:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._queue.cancel(self._consumer_tag)
                self._consumer_tag = None
                self._consuming_prefetch = 0
                log.warning("worker paused: provider unavailable, messages wait in %s", self.topology.work)
        if self._resume_task is None or self._resume_task.done():
            self._resume_task = asyncio.create_task(self._resume_after_cooldown())

    def _spawn(self, coroutine: Any) -> None:
        """Run consumer changes outside the message task (they cancel and re-consume)."""
        task = asyncio.create_task(coroutine)
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _resume_after_cooldown(self) -> None:
        routes = [r for r in (self.primary, self.fallback) if r is not None]
        wait = min(r.breaker.remaining_cooldown() for r in routes)
        await asyncio.sleep(wait)
        # one message at a time until a probe closes a breaker
        await self._consume(1 if all(r.breaker.state is not BreakerState.CLOSED for r in routes) else self.prefetch)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self.handle(message)
        except CONNECTION_ERRORS as exc:
            # The channel died under us: RabbitMQ redelivers the message; nothing to do.
            log.warning("lost the channel while handling %s: %s", message.message_id, exc)
        except Exception:
            log.exception("bug while handling message %s; it stays unacked", message.message_id)
            await self._settle(message.nack(requeue=True))
        finally:
            self._inflight.discard(task)

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, finish what is held within `timeout`, give back the rest."""
        self._stopping = True
        if self._resume_task is not None:
            self._resume_task.cancel()
        await asyncio.gather(*self._control_tasks, return_exceptions=True)
        async with self._control:
            if self._consumer_tag is not None and self._queue is not None:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._queue.cancel(self._consumer_tag)
                self._consumer_tag = None
        pending = set(self._inflight)
        if pending:
            done, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d messages unfinished at shutdown go back to the queue", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._channel.close()  # returns any unacked message to the queue
        for route in (self.primary, self.fallback):
            if route is not None:
                await route.provider.close()

    # -- one message -----------------------------------------------------------------

    async def handle(self, message: AbstractIncomingMessage) -> None:
        bind_notification(message.message_id or "?")
        headers = dict(message.headers or {})
        attempts = int(headers.get("x-attempts", 0) or 0)
        try:
            notification = Notification.from_bytes(message.body)
        except (ValidationError, ValueError) as exc:
            reason = f"unparseable message: {str(exc).splitlines()[0]}"
            await self._dead_letter(message, None, headers, reason, attempts, kind="unparseable")
            return
        bind_notification(notification.id)
        existing = await self.services.store.get_status(notification.id)
        if existing is not None and existing.status == "sent":
            log.info("message %s was already delivered; dropping the redelivered copy", notification.id)
            await message.ack()
            return
        capable = [r for r in (self.primary, self.fallback) if r is not None and r.can_serve(notification)]
        if not capable:  # queued while another provider was configured: it can never go out
            reason = f"provider {self.primary.name!r} " + str(
                self.primary.provider.capabilities.refusal(notification.target.kind, notification.text)
            )
            await self._dead_letter(message, notification, headers, reason, attempts, kind="permanent")
            return
        route = next((r for r in capable if r.breaker.allow()), None)
        if route is None:  # every capable provider's breaker is open: wait in the queue
            await self._pause()
            await message.nack(requeue=True)
            return
        try:
            receipt = await self._send(route, notification)
        except Exception as exc:
            failure = classify(exc, attempts=attempts + 1)
            fallback = self._fallback_for(route, notification, failure)
            if fallback is not None:
                try:
                    receipt = await self._send(fallback, notification)
                except Exception as fallback_exc:
                    failure = classify(fallback_exc, attempts=attempts + 1)
                    route = fallback
                else:
                    await self._delivered(message, notification, receipt)
                    return
            log.info("send %s via %s failed: %s", notification.id, route.name, failure.reason)
            await self._failed(message, notification, headers, route, failure, attempts + 1)
            return
        await self._delivered(message, notification, receipt)

    def _fallback_for(self, route: Route, notification: Notification, failure: Failure) -> Route | None:
        """The fallback takes over a permanent refusal it can serve, or an open breaker."""
        fallback = self.fallback
        if fallback is None or route is fallback or not fallback.can_serve(notification):
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
            return _is_blip(exc) and route.breaker.state is BreakerState.CLOSED

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
            self.metrics.provider_seconds.labels(route.name, outcome).observe(
                time.perf_counter() - started
            )
        route.breaker.record_success()
        return receipt

    # -- outcomes --------------------------------------------------------------------

    async def _delivered(
        self, message: AbstractIncomingMessage, notification: Notification, receipt: Receipt
    ) -> None:
        await self.services.store.put_status(
            DeliveryStatus(
                id=notification.id,
                status="sent",
                attempts=int((message.headers or {}).get("x-attempts", 0) or 0) + 1,
                provider=receipt.provider,
                provider_message_id=receipt.provider_message_id,
                sent_at=_now(),
                updated_at=_now(),
            )
        )
        await message.ack()
        if self._consuming_prefetch < self.prefetch and not self._stopping:
            # a half-open probe succeeded: back from one-at-a-time to full prefetch
            self._spawn(self._consume(self.prefetch))
        log.debug("sent via %s (provider id %s)", receipt.provider, receipt.provider_message_id)
        self.metrics.sent.labels(receipt.provider).inc()
        self._call_hook("message_delivered", message=notification, receipt=receipt)

    async def _failed(
        self,
        message: AbstractIncomingMessage,
        notification: Notification,
        headers: dict[str, Any],
        route: Route,
        failure: Failure,
        attempts: int,
    ) -> None:
        headers = {
            **headers,
            "x-attempts": attempts,
            "x-provider": route.name,
            "x-first-failed-at": headers.get("x-first-failed-at") or _now().isoformat(),
            "x-last-error": failure.reason[:500],
        }
        _put_provider_details(headers, failure)
        tier = None if failure.permanent else pick_retry_tier(
            self.topology.retry_delays, attempts, failure.retry_after
        )
        if tier is None:
            reason = failure.reason if failure.permanent else (
                f"retries exhausted after {attempts} attempts: {failure.reason}"
            )
            kind = "permanent" if failure.permanent else "exhausted"
            await self._dead_letter(message, notification, headers, reason, attempts, kind=kind)
            return
        delay = self.topology.retry_delays[tier]
        moved = await self._move(message, headers, exchange="", routing_key=self.topology.retry_queues[tier])
        if moved:
            self.metrics.retried.labels(route.name, failure.provider_code or "").inc()
            await self.services.store.put_status(
                DeliveryStatus(
                    id=notification.id,
                    status="retrying",
                    attempts=attempts,
                    next_try_at=_now() + timedelta(seconds=delay),
                    provider=route.name,
                    reason=failure.reason,
                    updated_at=_now(),
                )
            )

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        notification: Notification | None,
        headers: dict[str, Any],
        reason: str,
        attempts: int,
        *,
        kind: str,
    ) -> None:
        """`kind` (unparseable, permanent, exhausted) is the bounded label for metrics;
        the full reason goes in the headers."""
        headers = {
            **headers,
            "x-error": reason[:1000],
            "x-attempts": attempts,
            "x-first-failed-at": headers.get("x-first-failed-at") or _now().isoformat(),
            "x-dead-at": _now().isoformat(),
        }
        if not await self._move(message, headers, exchange=self.topology.dead, routing_key=""):
            return
        log.warning("message %s dead-lettered: %s", message.message_id, reason)
        self.metrics.dead.labels(
            str(headers.get("x-provider", "")), kind, str(headers.get("x-provider-code", ""))
        ).inc()
        if notification is not None:
            await self.services.store.put_status(
                DeliveryStatus(
                    id=notification.id,
                    status="dead",
                    attempts=attempts,
                    provider=headers.get("x-provider"),
                    reason=reason,
                    updated_at=_now(),
                )
            )
        self._call_hook("message_dead_lettered", message=notification, reason=reason, headers=headers)

    async def _move(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], *, exchange: str, routing_key: str
    ) -> bool:
        """Publish the unchanged body elsewhere, confirmed, then ack the original."""
        try:
            await self.services.publisher.publish(
                message.body,
                message_id=message.message_id or "",
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
            )
        except BrokerUnavailable as exc:
            log.warning("could not move %s (%s); it goes back to the queue", message.message_id, exc)
            await self._settle(message.nack(requeue=True))
            return False
        await message.ack()
        return True

    @staticmethod
    async def _settle(action: Any) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS, aiormq.exceptions.AMQPError):
            await action

    def _call_hook(self, name: str, **kwargs: Any) -> None:
        """Observer hooks never break delivery: a failing one is logged and ignored."""
        hook = getattr(self.services.plugins.manager.hook, name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception:
                log.exception("hook %s of plugin %s failed; delivery goes on", name, impl.plugin_name)


def _put_provider_details(headers: dict[str, Any], failure: Failure) -> None:
    if failure.provider_status is not None:
        headers["x-provider-status"] = failure.provider_status
    if failure.provider_code is not None:
        headers["x-provider-code"] = failure.provider_code
