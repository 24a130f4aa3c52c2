"""The worker: take a message, send it, settle it. Three parts, one job each:

- `Consumer` (consumer.py): prefetch, pause and resume as the breakers change;
- `Delivery` (delivery.py): routes, the send with its quick retries, the fallback;
- `Outcomes` (outcomes.py): ack, retry tier or dead letter, each confirmed, and the
  delivery status through one `StatusRecorder`.

This module only wires them together and decides, per message, which outcome applies.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from .consumer import Consumer
from .delivery import Delivery, Failed, NoRouteNow, Route, Sent, Unservable
from .logs import bind_notification
from .models import Notification
from .observers import Observers
from .outcomes import Outcomes, attempts_of
from .pacing import RateLimiter
from .provider import Provider
from .services import Services
from .status_recorder import StatusRecorder

log = logging.getLogger(__name__)


class Worker:
    """Consumes the work queue with `WA_WORKER_PREFETCH` messages in flight at once."""

    def __init__(self, services: Services, provider: Provider, *, fallback: Provider | None = None) -> None:
        self.services = services
        settings = services.settings
        self.delivery = Delivery(
            self._route(provider), self._route(fallback) if fallback is not None else None, services.metrics
        )
        self.status = StatusRecorder(services.store, services.metrics)
        self.observers = Observers(services.plugins.manager)
        self.outcomes = Outcomes(
            services.publisher, services.topology, services.metrics, self.status, self.observers
        )
        self.consumer = Consumer(
            services.broker,
            services.topology.work,
            services.topology.work_arguments(),
            prefetch=settings.wa_worker_prefetch,
            handler=self.handle,
            breakers=[route.breaker for route in self.delivery.routes],
        )

    def _route(self, provider: Provider) -> Route:
        rate = self.services.settings.wa_send_rate or provider.capabilities.send_rate
        return Route(provider, self.services.breaker(provider.name), RateLimiter(rate))

    async def start(self) -> None:
        """Wait for RabbitMQ, then consume. Returns once the consumer is registered."""
        await self.consumer.start()
        fallback = self.delivery.fallback
        log.info(
            "worker consuming %s with prefetch %d via %s",
            self.consumer.queue_name,
            self.consumer.prefetch,
            self.delivery.primary.name + (f" (fallback {fallback.name})" if fallback else ""),
        )

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, finish what is held within `timeout`, give back the rest."""
        await self.consumer.stop(timeout)
        await self.observers.drain(timeout=1.0)
        await self.status.close()
        for route in self.delivery.routes:
            await route.provider.close()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        bind_notification(message.message_id or "?")
        try:
            notification = Notification.from_bytes(message.body)
        except (ValidationError, ValueError) as exc:
            reason = f"unparseable message: {str(exc).splitlines()[0]}"
            await self.outcomes.dead_letter(message, None, reason, kind="unparseable")
            return
        bind_notification(notification.id)
        if await self.status.already_sent(notification.id):
            log.info("message %s was already delivered; dropping the redelivered copy", notification.id)
            await message.ack()
            return
        outcome = await self.delivery.deliver(notification, attempts_of(message))
        if isinstance(outcome, Sent):
            await self.outcomes.delivered(message, notification, outcome.receipt)
        elif isinstance(outcome, Failed):
            log.info("send %s via %s failed: %s", notification.id, outcome.route.name, outcome.failure.reason)
            await self.outcomes.failed(message, notification, outcome.route.name, outcome.failure)
        elif isinstance(outcome, Unservable):
            # queued while another provider was configured: it can never go out
            headers = {**(message.headers or {}), "x-provider": outcome.provider}
            await self.outcomes.dead_letter(message, notification, outcome.reason, kind="permanent", headers=headers)
        else:
            assert isinstance(outcome, NoRouteNow)
            # every capable provider's breaker is open: the consumer pauses on that
            # change; this message waits in the queue for the probe
            await message.nack(requeue=True)
