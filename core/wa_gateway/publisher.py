"""The confirmed publisher, and the one way this project builds an AMQP message.

A 202 is only ever given after RabbitMQ's publisher confirm: `Publisher.publish`
returns once the persistent message is confirmed, and says otherwise whether nothing
was sent (BrokerUnavailable) or the confirm did not come (PublishUncertain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange

from .broker import CONNECTION_ERRORS, Broker, BrokerUnavailable, PublishUncertain
from .models import Notification

log = logging.getLogger(__name__)


REPLAYED_AT = "x-replayed-at"
"""Header of a replayed dead letter: when it was replayed (its new life's name)."""


def header_int(headers: Mapping[str, Any] | None, name: str) -> int:
    """An integer header such as `x-attempts`; 0 when absent or not a number."""
    value = (headers or {}).get(name)
    try:
        return int(value) if isinstance(value, (int, float, str)) else 0
    except ValueError:
        return 0


def persistent_message(
    body: bytes, *, message_id: str, headers: Mapping[str, Any] | None = None
) -> aio_pika.Message:
    """The one way this project builds an AMQP message: persistent JSON, id as message_id."""
    return aio_pika.Message(
        body,
        message_id=message_id,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=dict(headers or {}),
    )


class Publisher:
    """Publishes with confirms on its own channel; a 202 is only ever given after one."""

    def __init__(self, broker: Broker, *, timeout: float = 5.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()

    async def _exchange(self, name: str) -> AbstractExchange:
        """The exchange object on the publishing channel, opened once and reused."""
        if self._channel is None or self._channel.is_closed:
            async with self._lock:
                if self._channel is None or self._channel.is_closed:
                    self._channel = await self.broker.channel()
                    self._exchanges = {}
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = self._exchanges[name] = await self._channel.get_exchange(name, ensure=False)
        return exchange

    async def publish(
        self,
        body: bytes,
        *,
        message_id: str,
        exchange: str,
        routing_key: str = "",
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Return once RabbitMQ confirmed the persistent message.

        BrokerUnavailable when nothing was sent (not connected, publishes blocked by an
        alarm, the broker refused it); PublishUncertain when the message went out but
        no confirm came back in time.
        """
        if not self.broker.connected:
            raise BrokerUnavailable("RabbitMQ is not reachable")
        if self.broker.blocked:
            raise BrokerUnavailable("RabbitMQ blocks publishing (a memory or disk alarm)")
        message = persistent_message(body, message_id=message_id, headers=headers)
        sent = False
        try:
            async with asyncio.timeout(self.timeout):
                target = await self._exchange(exchange)
                sent = True
                await target.publish(message, routing_key=routing_key, mandatory=True)
        except TimeoutError:
            if not sent:
                raise BrokerUnavailable("RabbitMQ did not open a channel in time") from None
            raise PublishUncertain(
                f"RabbitMQ did not confirm the message within {self.timeout:g} s"
            ) from None
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"RabbitMQ refused the message ({exc})") from None
        except (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            # aiormq raises RuntimeError("... closed") when a channel is opened mid-reconnect
            log.warning("publish failed: %s: %s", type(exc).__name__, exc)
            if not sent:
                raise BrokerUnavailable(f"RabbitMQ connection lost ({type(exc).__name__})") from None
            raise PublishUncertain(
                f"RabbitMQ connection lost before the confirm ({type(exc).__name__})"
            ) from None

    async def publish_notification(self, notification: Notification) -> None:
        """To its channel's work queue."""
        topology = self.broker.topology
        await self.publish(
            notification.to_bytes(),
            message_id=notification.id,
            exchange=topology.work,
            routing_key=topology.work_queue(notification.channel),
        )

    async def close(self, timeout: float = 2.0) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(asyncio.TimeoutError, *CONNECTION_ERRORS, aiormq.exceptions.AMQPError):
                await asyncio.wait_for(channel.close(), timeout)
