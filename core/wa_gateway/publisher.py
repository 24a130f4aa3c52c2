"""The confirmed publisher, and the one way this project builds an AMQP message.

A 202 is only ever given after RabbitMQ's publisher confirm: `Publisher.publish`
returns once the persistent message is confirmed, and says otherwise whether nothing
was sent (BrokerUnavailable) or the confirm did not come (PublishUncertain).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel
from pamqp.commands import Basic

from .amqp_frames import CONTENT_ENCODING, CONTENT_TYPE
from .broker import CONNECTION_ERRORS, Broker, BrokerUnavailable, PublishUncertain, close_within
from .models import Notification
from .publish_pipeline import PublishPipeline

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
    """The one way this project builds an AMQP message: persistent JSON, id as message_id.

    `Publisher` sends the same properties, written by hand (amqp_frames.JsonHeader)."""
    return aio_pika.Message(
        body,
        message_id=message_id,
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=dict(headers or {}),
    )


class Deadlines:
    """`asyncio.timeout(seconds)` for many concurrent calls, kept by one timer.

    `with deadlines:` raises TimeoutError out of the block when it has run `seconds`
    (up to one `tick` more), exactly as asyncio.timeout does: the task is cancelled and
    the cancellation, if it was ours, becomes TimeoutError. asyncio.timeout schedules and
    cancels a timer per call, which was about 3 % of a gateway's CPU per request; here a
    call only enters and leaves a dict, and one timer looks at the oldest calls each tick
    while any is waiting. A task is in one block at a time, so the task is the key; every
    call has the same length, so the dict's order is the deadlines' order.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(0.1, seconds / 10)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[asyncio.Task[Any], tuple[float, int]] = {}
        """Task -> (its deadline, how often it was being cancelled when it entered)."""
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def _current(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]:
        loop = self._loop
        task = asyncio.current_task(loop) if loop is not None else None  # no get_running_loop()
        if task is None:  # first use, or another event loop (tests run one per test)
            loop = self._loop = asyncio.get_running_loop()
            self._waiting, self._expired, self._timer = {}, set(), None
            task = asyncio.current_task(loop)
            if task is None:
                raise RuntimeError("Deadlines must be used inside a task")
        assert loop is not None
        return loop, task

    def __enter__(self) -> None:
        loop, task = self._current()
        self._waiting[task] = (loop.time() + self.seconds, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        _, task = self._current()
        _, cancelling = self._waiting.pop(task)
        if task in self._expired:
            self._expired.discard(task)
            if task.uncancel() <= cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from error

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, (deadline, _) in self._waiting.items():
            if deadline > now:
                break
            if task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = self._loop.call_later(self.tick, self._sweep) if self._waiting else None


class Publisher:
    """Publishes with confirms on its own channel; a 202 is only ever given after one.

    The channel is aio-pika's robust channel (reopened after a reconnection); each
    publish goes through a PublishPipeline on the aiormq channel under it, which
    does what aiormq's `basic_publish` does for a confirmed publish at a fraction of
    the CPU.
    """

    def __init__(self, broker: Broker, *, timeout: float = 5.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self._deadlines = Deadlines(timeout)
        self._channel: AbstractChannel | None = None
        self._pipeline: PublishPipeline | None = None
        self._lock = asyncio.Lock()

    def _reaches_several_queues(self, exchange: str) -> bool:
        topology = self.broker.topology
        return exchange == topology.work and topology.ledger

    async def _pipeline_now(self) -> PublishPipeline:
        """The pipeline on the aiormq channel under the publishing channel: opened once,
        and again when aio-pika reopened the channel (a reconnection) or it was closed."""
        channel = self._channel
        if channel is None or channel.is_closed:
            async with self._lock:
                if self._channel is None or self._channel.is_closed:
                    self._channel = await self.broker.channel()
                channel = self._channel
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        if self._pipeline is None or self._pipeline.channel is not underlay:
            if self._pipeline is not None:
                self._pipeline.close()
            self._pipeline = PublishPipeline(underlay)
        return self._pipeline

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

        BrokerUnavailable when nothing was queued (not connected, publishes blocked by an
        alarm, the broker refused it, no queue is bound for it); PublishUncertain when the message went out but
        no confirm came back in time.
        """
        broker = self.broker
        if not broker.connected:
            raise BrokerUnavailable("RabbitMQ is not reachable")
        if broker.blocked:
            raise BrokerUnavailable("RabbitMQ blocks publishing (a memory or disk alarm)")
        sent = False
        try:
            with self._deadlines:
                pipeline = await self._pipeline_now()
                confirmation = pipeline.publish(
                    body, message_id=message_id, exchange=exchange, routing_key=routing_key,
                    headers=headers,
                )
                sent = True
                confirmed = await confirmation
        except TimeoutError:
            if not sent:
                raise BrokerUnavailable("RabbitMQ did not open a channel in time") from None
            raise PublishUncertain(
                f"RabbitMQ did not confirm the message within {self.timeout:g} s"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            if isinstance(exc.frame, Basic.Nack) and self._reaches_several_queues(exchange):
                # a nack says some queue refused it, not that none took it: the work queue
                # and wa.ledger each take their copy under one confirm
                raise PublishUncertain(f"RabbitMQ refused the message in one of its queues ({exc})") from None
            raise BrokerUnavailable(f"RabbitMQ refused the message ({exc})") from None
        except (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            # aiormq raises RuntimeError("... closed") when a channel is opened mid-reconnect
            log.warning("publish failed: %s: %s", type(exc).__name__, exc)
            if not sent:
                raise BrokerUnavailable(f"RabbitMQ connection lost ({type(exc).__name__})") from None
            raise PublishUncertain(
                f"RabbitMQ connection lost before the confirm ({type(exc).__name__})"
            ) from None
        if not isinstance(confirmed, Basic.Ack):  # mandatory: RabbitMQ returned it unrouted
            where = f"exchange {exchange!r}" if exchange else "the default exchange"
            raise BrokerUnavailable(f"no queue is bound for {routing_key!r} on {where}")

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
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        if channel is not None and not channel.is_closed:
            problem = await close_within(channel.close(), timeout)
            expected = (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError)
            if problem is not None and not isinstance(problem, expected):
                raise problem


HELD_RETRY_FIRST = 0.5
HELD_RETRY_MAX = 10.0
"""Seconds between tries of a publish RabbitMQ did not take, doubling up to this."""


class UntilTaken:
    """Tries a publish again until RabbitMQ takes it, for what must not be dropped (a
    moved message, a status change): one log line when RabbitMQ stops taking `what`, one
    when it takes it again, whatever the number of publishes waiting meanwhile."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._stuck = False

    async def run(
        self,
        attempt: Callable[[], Awaitable[None]],
        give_up: Callable[[BrokerUnavailable], bool] = lambda exc: False,
    ) -> bool:
        """True once `attempt` succeeded; False when `give_up(error)` says to stop trying."""
        wait = HELD_RETRY_FIRST
        while True:
            try:
                await attempt()
                break
            except BrokerUnavailable as exc:  # PublishUncertain too: a second copy is harmless
                if give_up(exc):
                    return False
                if not self._stuck:
                    self._stuck = True
                    log.warning("RabbitMQ does not take %s (%s); they are tried again every %g-%g s",
                                self.what, exc, HELD_RETRY_FIRST, HELD_RETRY_MAX)
                await asyncio.sleep(wait)
                wait = min(wait * 2, HELD_RETRY_MAX)
        if self._stuck:
            self._stuck = False
            log.warning("RabbitMQ takes %s again", self.what)
        return True
