"""RabbitMQ topology: the names and arguments of every exchange and queue.

Every queue is declared with the arguments it keeps for life; RabbitMQ refuses a
changed declaration, and TopologyMismatch reports that in one line naming the queue
and the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

DELIVERY_LIMIT = 20
"""Deliveries after which a message that keeps crashing workers goes to the dead queue."""

class TopologyMismatch(Exception):
    """A queue or exchange exists with other arguments than this release declares."""


def _seconds_label(delay: float) -> str:
    return f"{delay:g}s"


DEFAULT_CHANNEL = "default"


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue; `prefix` is `wa` in production.

    Each channel has its own work queue and retry tiers, so an open breaker pauses one
    channel's consumer and no other: channel `default` keeps the first release's names
    (`wa.notify`, `wa.retry.5s` …), channel `people` gets `wa.notify.people`,
    `wa.retry.people.5s` …. One direct exchange routes by the work queue's name.
    """

    retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0)
    prefix: str = "wa"
    channels: tuple[str, ...] = (DEFAULT_CHANNEL,)
    ledger: bool = False
    """Declare `wa.ledger`, the queue of status changes on their way to the database."""
    callbacks: bool = False
    """Declare `wa.callbacks` and its retry tiers: status callbacks to the calling apps."""

    @property
    def work(self) -> str:
        """Name of the direct exchange and of the `default` channel's work queue."""
        return f"{self.prefix}.notify"

    def work_queue(self, channel: str = DEFAULT_CHANNEL) -> str:
        """A channel's work queue; also the routing key that reaches it."""
        return self.work if channel == DEFAULT_CHANNEL else f"{self.work}.{channel}"

    def retry_queues_of(self, channel: str = DEFAULT_CHANNEL) -> tuple[str, ...]:
        middle = "" if channel == DEFAULT_CHANNEL else f"{channel}."
        return tuple(f"{self.prefix}.retry.{middle}{_seconds_label(d)}" for d in self.retry_delays)

    def work_queues(self) -> tuple[str, ...]:
        return tuple(self.work_queue(channel) for channel in self.channels)

    @property
    def dead(self) -> str:
        """Name of the fanout dead-letter exchange and of its queue."""
        return f"{self.prefix}.dead"

    @property
    def ledger_queue(self) -> str:
        """Status changes waiting for the ledger's database: bound to the work exchange
        with every channel's routing key, it also gets a copy of each notification the
        gateway publishes, under the same publisher confirm."""
        return f"{self.prefix}.ledger"

    def ledger_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"}

    @property
    def callback_queue(self) -> str:
        """Status callbacks waiting to be POSTed to the calling apps: a lane of its own,
        with its own consumer, so a slow or dead receiver never slows sending."""
        return f"{self.prefix}.callbacks"

    def callback_retry_queues(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}.retry.callbacks.{_seconds_label(d)}" for d in self.retry_delays)

    def callback_retry_arguments(self, delay: float) -> dict[str, Any]:
        """A callback tier waits `delay`, then gives the job back to `wa.callbacks`
        (through the default exchange: nothing else is bound to it)."""
        return {
            **self.retry_arguments(delay),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.callback_queue,
        }

    def work_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    def retry_arguments(self, delay: float, channel: str = DEFAULT_CHANNEL) -> dict[str, Any]:
        """A tier holds messages for `delay` and then dead-letters them back to its
        channel's work queue."""
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": int(delay * 1000),
            "x-dead-letter-exchange": self.work,
            "x-dead-letter-routing-key": self.work_queue(channel),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def all_queues(self) -> tuple[str, ...]:
        queues = [self.dead, *([self.ledger_queue] if self.ledger else [])]
        if self.callbacks:
            queues += [self.callback_queue, *self.callback_retry_queues()]
        for channel in self.channels:
            queues += [self.work_queue(channel), *self.retry_queues_of(channel)]
        return tuple(sorted(queues, key=lambda name: (name != self.work, name)))


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
        for sender in topology.channels:
            name = topology.work_queue(sender)
            work_queue = await channel.declare_queue(name, durable=True, arguments=topology.work_arguments())
            await work_queue.bind(work_exchange, routing_key=name)
            for retry, delay in zip(topology.retry_queues_of(sender), topology.retry_delays, strict=True):
                await channel.declare_queue(retry, durable=True, arguments=topology.retry_arguments(delay, sender))
        if topology.callbacks:
            await channel.declare_queue(topology.callback_queue, durable=True, arguments=topology.work_arguments())
            for retry, delay in zip(topology.callback_retry_queues(), topology.retry_delays, strict=True):
                await channel.declare_queue(retry, durable=True, arguments=topology.callback_retry_arguments(delay))
        if topology.ledger:
            ledger = await channel.declare_queue(
                topology.ledger_queue, durable=True, arguments=topology.ledger_arguments()
            )
            for sender in topology.channels:
                await ledger.bind(work_exchange, routing_key=topology.work_queue(sender))
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch(_precondition_text(exc)) from None
    return work_exchange


async def unbind_unused_ledger(connection: AbstractConnection, topology: Topology) -> bool:
    """With the ledger off, a `wa.ledger` left from when it was on would keep a copy of
    every notification for a reader that never comes: cut its bindings (its content
    stays, for an operator to look at). True when there were bindings to cut."""
    if topology.ledger:
        return False
    channel = await connection.channel()
    try:
        try:
            queue = await channel.declare_queue(topology.ledger_queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False  # there is none: the usual case
        for sender in topology.channels:
            await queue.unbind(topology.work, routing_key=topology.work_queue(sender))
        return True
    finally:
        if not channel.is_closed:
            await channel.close()


def _precondition_text(exc: Exception) -> str:
    """RabbitMQ's own reason, e.g. "inequivalent arg 'x-message-ttl' for queue 'wa.retry.5s'"."""
    reason = str(exc.args[0] if exc.args else exc)
    reason = reason.removeprefix("PRECONDITION_FAILED - ")
    return (
        f"RabbitMQ refused the declaration: {reason}. Delete that queue (after draining it) "
        "or use the settings it was declared with"
    )
