"""The worker: take a message, send it, settle it. Three parts, one job each:

- `Consumer` (consumer.py): prefetch, pause and resume as the breakers change;
- `Delivery` (delivery.py): routes, the send with its quick retries, the fallback;
- `Outcomes` (outcomes.py): ack, retry tier or dead letter, each confirmed, and the
  delivery status through one `StatusRecorder`.

This module only wires them together and decides, per message, which outcome applies.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from .callback_sender import CallbackSender
from .channels import DEFAULT, LEGACY_FALLBACK
from .consumer import Consumer
from .delivery import Delivery, Failed, NoRouteNow, Route, Sent, Unservable
from .http_server import settle_gc
from .ledger_feed import LedgerFeed
from .ledger_writer import LedgerWriter
from .logs import bind_notification
from .models import Notification
from .observers import Observers
from .outcomes import Outcomes, attempts_of, sent_key
from .pacing import RateLimiter
from .provider import Provider
from .services import Services
from .status_recorder import StatusRecorder

log = logging.getLogger(__name__)


class Worker:
    """Consumes every channel's work queue, `WA_WORKER_PREFETCH` messages in flight each.

    Each channel has its own consumer, breaker and pacer, so one channel's provider
    being down slows no other. A channel's fallback is another sender's route (its
    provider, breaker and pacer); the message stays in its own channel's queue.
    """

    def __init__(
        self,
        services: Services,
        provider: Provider | None = None,
        *,
        fallback: Provider | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        """`providers`: one per sender of `services.channels`, by channel name; or, as in
        the first release, `provider` (channel `default`) and an optional `fallback`."""
        self.services = services
        plan = services.channels
        if providers is None:
            assert provider is not None, "give `providers`, or `provider` for the default channel"
            providers = {DEFAULT: provider, **({LEGACY_FALLBACK: fallback} if fallback else {})}
            fallbacks = {DEFAULT: LEGACY_FALLBACK} if fallback else {}
        else:
            fallbacks = {name: s.fallback for name, s in plan.senders.items() if s.fallback}
        routes = {name: self._route(name, p) for name, p in providers.items()}
        self.status = StatusRecorder(
            services.store, services.metrics, LedgerFeed(services.publisher, services.topology)
        )
        self.observers = Observers(services.plugins.manager)
        self.outcomes = Outcomes(
            services.publisher, services.topology, services.metrics, self.status, self.observers
        )
        self.ledger = LedgerWriter(services, self.observers) if services.ledger is not None else None
        self.callbacks = CallbackSender(services) if services.topology.callbacks else None
        self.deliveries: dict[str, Delivery] = {}
        self.consumers: dict[str, Consumer] = {}
        for name in plan.routable:
            if name not in routes:
                continue
            fallback_name = fallbacks.get(name)
            delivery = Delivery(routes[name], routes.get(fallback_name) if fallback_name else None, services.metrics)
            self.deliveries[name] = delivery
            self.consumers[name] = Consumer(
                services.broker,
                services.topology.work_queue(name),
                services.topology.work_arguments(),
                prefetch=services.settings.wa_worker_prefetch,
                handler=functools.partial(self.handle, channel=name),
                breakers=[route.breaker for route in delivery.routes],
            )

    @property
    def consumer(self) -> Consumer:
        """The first channel's consumer (with one channel: the only one)."""
        return next(iter(self.consumers.values()))

    def _route(self, channel: str, provider: Provider) -> Route:
        sender = self.services.channels.senders.get(channel)
        inherited, declared = self.services.settings.wa_send_rate, provider.capabilities.send_rate
        rate = sender.pace(inherited, declared, legacy=self.services.channels.legacy)[0] if sender else (
            inherited or declared
        )
        return Route(provider, self.services.breaker(channel), RateLimiter(rate), channel)

    async def start(self) -> None:
        """Wait for RabbitMQ, then consume every channel. Returns once all are registered."""
        settle_gc()  # before any message is held: the collection it starts stops the loop
        await asyncio.gather(*(consumer.start() for consumer in self.consumers.values()))
        if self.ledger is not None:
            await self.ledger.start()
        if self.callbacks is not None:
            await self.callbacks.start()
        for name, consumer in self.consumers.items():
            delivery = self.deliveries[name]
            fallback = delivery.fallback
            log.info(
                "worker consuming %s with prefetch %d via %s",
                consumer.queue_name,
                consumer.prefetch,
                f"{name} ({delivery.primary.name})"
                + (f", fallback {fallback.channel} ({fallback.name})" if fallback else ""),
            )

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, finish what is held within `timeout`, give back the rest."""
        # the callback sender beside the consumers: its POSTs in flight may take their 15 s
        await asyncio.gather(
            *(consumer.stop(timeout) for consumer in self.consumers.values()),
            *([self.callbacks.stop(timeout)] if self.callbacks is not None else []),
        )
        if self.ledger is not None:  # after the consumers: their last changes are in RabbitMQ
            await self.ledger.stop(timeout)
        await self.observers.drain(timeout=1.0)
        await self.status.close()
        closed: set[int] = set()
        for delivery in self.deliveries.values():
            for route in delivery.routes:
                if id(route.provider) not in closed:
                    closed.add(id(route.provider))
                    await route.provider.close()

    async def handle(self, message: AbstractIncomingMessage, *, channel: str = DEFAULT) -> None:
        """One message from `channel`'s queue."""
        bind_notification(message.message_id or "?")
        try:
            notification = Notification.from_bytes(message.body)
        except (ValidationError, ValueError) as exc:
            reason = f"unparseable message: {str(exc).splitlines()[0]}"
            headers = {**(message.headers or {}), "x-channel": channel}
            await self.outcomes.dead_letter(message, None, reason, kind="unparseable", headers=headers)
            return
        bind_notification(notification.id)
        if await self.status.already_sent(sent_key(notification)):
            log.info("message %s was already delivered; dropping the redelivered copy", notification.id)
            await message.ack()
            return
        outcome = await self.deliveries[channel].deliver(notification, attempts_of(message))
        if isinstance(outcome, Sent):
            await self.outcomes.delivered(message, notification, outcome.receipt, outcome.template)
        elif isinstance(outcome, Failed):
            log.info("send %s via %s failed: %s", notification.id, outcome.route.name, outcome.failure.reason)
            await self.outcomes.failed(message, notification, outcome.route, outcome.failure, channel=channel)
        elif isinstance(outcome, Unservable):
            # queued while another provider was configured: it can never go out
            headers = {**(message.headers or {}), "x-provider": outcome.provider, "x-channel": channel}
            await self.outcomes.dead_letter(message, notification, outcome.reason, kind="permanent", headers=headers)
        else:
            assert isinstance(outcome, NoRouteNow)
            # every capable provider's breaker is open: the consumer pauses on that
            # change; this message waits in the queue for the probe
            await message.nack(requeue=True)
