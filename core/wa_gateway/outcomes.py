"""What happens to a message after a send: ack, a retry tier, or the dead-letter queue.

Every hand-over is at-least-once: a message moved to a retry tier or to the dead
queue is acked only after RabbitMQ confirmed the new copy. A move RabbitMQ cannot
take now (an alarm, a reconnect) is tried again while the message stays held: a
nack would count as a delivery and, repeated, dead-letter it at the delivery limit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aio_pika.abc import AbstractIncomingMessage

from .broker import BrokerUnavailable
from .delivery import Route
from .ledger_feed import change_of
from .metrics import Metrics
from .models import DeliveryStatus, Notification
from .observers import Observers
from .provider import Receipt
from .publisher import REPLAYED_AT, Publisher, UntilTaken, header_int
from .resilience import Failure, pick_retry_tier
from .status_recorder import StatusRecorder
from .topology import Topology

log = logging.getLogger(__name__)



def now() -> datetime:
    return datetime.now(UTC)


def sent_key(notification: Notification) -> str:
    """What "already sent?" asks about: the notification, or its template when a receipt
    said later that the text was refused (that send is a second one, not a copy)."""
    return f"{notification.id}:template" if notification.use_template else notification.id


def generation_of(message: AbstractIncomingMessage) -> str:
    """Which life of the message this is: "" for the first, the replay's time after a
    dead letter was replayed (its attempts count from 0 again)."""
    replayed = (message.headers or {}).get(REPLAYED_AT)
    return "" if replayed is None else str(replayed)


def attempts_of(message: AbstractIncomingMessage) -> int:
    """Sends attempted before this delivery (each retry tier counts one)."""
    return header_int(message.headers, "x-attempts")


class Outcomes:
    def __init__(
        self,
        publisher: Publisher,
        topology: Topology,
        metrics: Metrics,
        status: StatusRecorder,
        observers: Observers,
    ) -> None:
        self.publisher = publisher
        self.topology = topology
        self.metrics = metrics
        self.status = status
        self.observers = observers
        self.mover = Mover(publisher)

    async def delivered(
        self,
        message: AbstractIncomingMessage,
        notification: Notification,
        receipt: Receipt,
        template: str | None = None,
    ) -> None:
        """Record `sent` before the ack, so a redelivered copy is recognised. `template`:
        it went out as that template (the text was refused outside the 24-hour window)."""
        attempts = attempts_of(message) + 1
        at = now()
        change = None
        if self.status.takes_changes:  # built only for the ledger
            change = change_of(
                notification, "sent", attempt=attempts, generation=generation_of(message),
                provider=receipt.provider, provider_message_id=receipt.provider_message_id,
                message=None if template is None else (
                    f"sent as template {template}: the text was refused outside the 24-hour window"
                ),
            )
        await self.status.record(
            DeliveryStatus(
                id=notification.id,
                status="sent",
                attempts=attempts,
                provider=receipt.provider,
                provider_message_id=receipt.provider_message_id,
                sent_at=at,
                updated_at=at,
            ),
            change,
        )
        if notification.use_template:  # the template after a late refusal: its own "sent"
            await self.status.record(DeliveryStatus(id=sent_key(notification), status="sent", updated_at=now()))
        await message.ack()
        log.debug("sent via %s (provider id %s)", receipt.provider, receipt.provider_message_id)
        self.metrics.child(self.metrics.sent, notification.channel, receipt.provider).inc()
        self.observers.notify("message_delivered", message=notification, receipt=receipt)

    async def failed(
        self,
        message: AbstractIncomingMessage,
        notification: Notification,
        route: Route,
        failure: Failure,
        *,
        channel: str,
    ) -> None:
        """A retry tier of `channel` for a transient failure with tiers left; else the
        dead queue. `route` is the sender that failed (the channel's, or its fallback)."""
        provider = route.name
        attempts = attempts_of(message) + 1
        headers = dict(message.headers or {})
        headers.update({
            "x-attempts": attempts,
            "x-provider": provider,
            "x-channel": channel,
            "x-first-failed-at": headers.get("x-first-failed-at") or now().isoformat(),
            "x-last-error": failure.reason[:500],
        })
        if failure.provider_status is not None:
            headers["x-provider-status"] = failure.provider_status
        if failure.provider_code is not None:
            headers["x-provider-code"] = failure.provider_code
        tier = None if failure.permanent else pick_retry_tier(self.topology.retry_delays, attempts, failure.retry_after)
        if tier is None:
            reason = failure.reason if failure.permanent else (
                f"retries exhausted after {attempts} attempts: {failure.reason}"
            )
            kind = "permanent" if failure.permanent else "exhausted"
            await self.dead_letter(message, notification, reason, kind=kind, headers=headers)
            return
        delay = self.topology.retry_delays[tier]
        retry_queue = self.topology.retry_queues_of(channel)[tier]
        # recorded before the move: once the message is acked, its change must be in RabbitMQ
        await self.status.record(
            DeliveryStatus(
                id=notification.id,
                status="retrying",
                attempts=attempts,
                next_try_at=now() + timedelta(seconds=delay),
                provider=provider,
                reason=failure.reason,
                updated_at=now(),
            ),
            change_of(
                notification, "retrying", attempt=attempts, generation=generation_of(message),
                provider=provider, code=failure.provider_code, message=failure.reason[:2000],
            ),
        )
        if not await self.move(message, headers, exchange="", routing_key=retry_queue):
            return
        self.metrics.retried.labels(channel, provider, failure.provider_code or "").inc()

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        notification: Notification | None,
        reason: str,
        *,
        kind: str,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """`kind` (unparseable, permanent, exhausted) is the bounded label for metrics;
        the full reason goes in the headers."""
        headers = dict(message.headers or {}) if headers is None else headers
        attempts = header_int(headers, "x-attempts")
        headers.update({
            "x-error": reason[:1000],
            "x-attempts": attempts,
            "x-first-failed-at": headers.get("x-first-failed-at") or now().isoformat(),
            "x-dead-at": now().isoformat(),
        })
        if notification is not None:  # recorded before the move, as in `failed`
            code = headers.get("x-provider-code")
            await self.status.record(
                DeliveryStatus(
                    id=notification.id,
                    status="dead",
                    attempts=attempts,
                    provider=headers.get("x-provider"),
                    reason=reason,
                    updated_at=now(),
                ),
                change_of(
                    notification, "dead", attempt=attempts, generation=generation_of(message),
                    provider=headers.get("x-provider"), code=None if code is None else str(code),
                    message=reason[:2000],
                ),
            )
        if not await self.move(message, headers, exchange=self.topology.dead, routing_key=""):
            return
        log.warning("message %s dead-lettered: %s", message.message_id, reason)
        self.metrics.dead.labels(
            str(headers.get("x-channel", "")), str(headers.get("x-provider", "")), kind,
            str(headers.get("x-provider-code", "")),
        ).inc()
        self.observers.notify("message_dead_lettered", message=notification, reason=reason, headers=headers)

    async def move(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], *, exchange: str, routing_key: str
    ) -> bool:
        """Publish the unchanged body elsewhere, confirmed, then ack the original (Mover.move)."""
        return await self.mover.move(message, headers, exchange=exchange, routing_key=routing_key)


class Mover:
    """Moves held messages at least once: the copy confirmed, then the original acked.

    One per consumer of moves (the worker's outcomes, the callback sender), each with
    its own "RabbitMQ does not take moves" log state.
    """

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._until_taken = UntilTaken("moved messages")

    async def move(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], *, exchange: str, routing_key: str
    ) -> bool:
        """Publish the unchanged body elsewhere, confirmed, then ack the original.

        While RabbitMQ does not take the copy, the original stays held (unacked) and
        the move is tried again; False only when the original's channel is gone,
        and RabbitMQ has then given it back to the queue itself.
        """
        def channel_gone(exc: BrokerUnavailable) -> bool:
            if _channel_gone(message):
                log.warning("could not move %s (%s); RabbitMQ gives it back to the queue",
                            message.message_id, exc)
                return True
            return False

        taken = await self._until_taken.run(
            lambda: self.publisher.publish(
                message.body, message_id=message.message_id or "", exchange=exchange,
                routing_key=routing_key, headers=headers,
            ),
            give_up=channel_gone,
        )
        if not taken:
            return False
        await message.ack()
        return True


def _channel_gone(message: AbstractIncomingMessage) -> bool:
    """The channel the message came on is closed: RabbitMQ has taken it back."""
    try:
        return message.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:  # aio-pika's way of saying "closed"
        return True
