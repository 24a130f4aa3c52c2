"""RabbitMQ topology and the confirmed publisher.

The reliability chain is: publisher confirms -> durable quorum queue -> manual ack
after the work is done. Every queue is declared here with the arguments it will keep
for life; RabbitMQ refuses a changed declaration, and TopologyMismatch reports that
in one line naming the queue and the argument.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
)

from .models import Notification

log = logging.getLogger(__name__)

DELIVERY_LIMIT = 20
"""Deliveries after which a message that keeps crashing workers goes to the dead queue."""

CONNECTION_ERRORS = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
)


class BrokerUnavailable(Exception):
    """RabbitMQ cannot take the message right now; the caller should try later."""


class TopologyMismatch(Exception):
    """A queue or exchange exists with other arguments than this release declares."""


def _seconds_label(delay: float) -> str:
    return f"{delay:g}s"


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue; `prefix` is `wa` in production."""

    retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0)
    prefix: str = "wa"

    @property
    def work(self) -> str:
        """Name of the direct exchange and of the quorum work queue."""
        return f"{self.prefix}.notify"

    @property
    def dead(self) -> str:
        """Name of the fanout dead-letter exchange and of its queue."""
        return f"{self.prefix}.dead"

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}.retry.{_seconds_label(d)}" for d in self.retry_delays)

    def work_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    def retry_arguments(self, delay: float) -> dict[str, Any]:
        """A tier holds messages for `delay` and then dead-letters them back to work."""
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": int(delay * 1000),
            "x-dead-letter-exchange": self.work,
            "x-dead-letter-routing-key": self.work,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def all_queues(self) -> tuple[str, ...]:
        return (self.work, self.dead, *self.retry_queues)


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare everything idempotently; returns the work exchange."""
    try:
        dead_exchange = await channel.declare_exchange(
            topology.dead, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(topology.dead, durable=True)
        await dead_queue.bind(dead_exchange)
        work_exchange = await channel.declare_exchange(
            topology.work, aio_pika.ExchangeType.DIRECT, durable=True
        )
        work_queue = await channel.declare_queue(
            topology.work, durable=True, arguments=topology.work_arguments()
        )
        await work_queue.bind(work_exchange, routing_key=topology.work)
        for name, delay in zip(topology.retry_queues, topology.retry_delays, strict=True):
            await channel.declare_queue(name, durable=True, arguments=topology.retry_arguments(delay))
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch(_precondition_text(exc)) from None
    return work_exchange


def _precondition_text(exc: Exception) -> str:
    """RabbitMQ's own reason, e.g. "inequivalent arg 'x-message-ttl' for queue 'wa.retry.5s'"."""
    reason = str(exc.args[0] if exc.args else exc)
    reason = reason.removeprefix("PRECONDITION_FAILED - ")
    return (
        f"RabbitMQ refused the declaration: {reason}. Delete that queue (after draining it) "
        "or use the settings it was declared with"
    )


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


class Broker:
    """One robust connection per process, reconnecting by itself.

    `start()` returns at once; a background task keeps trying to connect, so a
    gateway started before RabbitMQ answers 503 until it is there, then works.
    """

    def __init__(
        self, url: str, topology: Topology, *, reconnect_interval: float = 1.0, name: str = "wa-gateway"
    ) -> None:
        self.url = url
        self.topology = topology
        self.reconnect_interval = reconnect_interval
        self.name = name
        self.connection: AbstractRobustConnection | None = None
        self.failure: Exception | None = None
        self._first_connect = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        connection = self.connection
        return (
            connection is not None and not connection.is_closed and connection.connected.is_set()
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="broker-connect")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for the first connection; re-raise a TopologyMismatch found on the way."""
        await asyncio.wait_for(self._first_connect.wait(), timeout)
        if isinstance(self.failure, TopologyMismatch):
            raise self.failure

    async def _connect_forever(self) -> None:
        delay = self.reconnect_interval
        while True:
            try:
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=5,
                    reconnect_interval=self.reconnect_interval,
                    client_properties={"connection_name": self.name},
                )
            except CONNECTION_ERRORS as exc:
                if self.failure is None:
                    log.warning("RabbitMQ is not reachable (%s); retrying every few seconds", exc)
                self.failure = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with connection.channel() as channel:
                    await declare_topology(channel, self.topology)
            except TopologyMismatch as exc:
                self.failure = exc
                await connection.close()
                self._first_connect.set()
                return
            self.connection = connection
            self.failure = None
            log.info("connected to RabbitMQ")
            self._first_connect.set()
            return

    async def channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """A robust channel with publisher confirms, optionally with a prefetch."""
        if self.connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        channel = await self.connection.channel(publisher_confirms=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


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
        """Return once RabbitMQ confirmed the persistent message; else BrokerUnavailable."""
        if not self.broker.connected:
            raise BrokerUnavailable("RabbitMQ is not reachable")
        message = persistent_message(body, message_id=message_id, headers=headers)
        try:
            async with asyncio.timeout(self.timeout):
                target = await self._exchange(exchange)
                await target.publish(message, routing_key=routing_key, mandatory=True)
        except TimeoutError:
            raise BrokerUnavailable("RabbitMQ did not confirm the message in time") from None
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"RabbitMQ refused the message ({exc})") from None
        except (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            # aiormq raises RuntimeError("... closed") when a channel is opened mid-reconnect
            log.warning("publish failed: %s: %s", type(exc).__name__, exc)
            raise BrokerUnavailable(f"RabbitMQ connection lost ({type(exc).__name__})") from None

    async def publish_notification(self, notification: Notification) -> None:
        topology = self.broker.topology
        await self.publish(
            notification.to_bytes(),
            message_id=notification.id,
            exchange=topology.work,
            routing_key=topology.work,
        )

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
