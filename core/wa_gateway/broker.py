"""The connection to RabbitMQ: one per process, reconnecting by itself.

The reliability chain is: publisher confirms (publisher.py) -> durable quorum queues
(topology.py) -> manual ack after the work is done (the worker). This module keeps
the connection, says whether RabbitMQ blocks it (alarms), and closes it in bounded time.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustConnection,
)

from .topology import Topology, TopologyMismatch, declare_topology, unbind_unused_ledger

log = logging.getLogger(__name__)

ALARM_PROBE_ROUTING_KEY = "wa-gateway.alarm-probe"
"""Routing key of the alarm probe: no queue is bound to it, so RabbitMQ drops the probe."""

CONNECTION_ERRORS = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
)


class BrokerUnavailable(Exception):
    """RabbitMQ did not take the message: nothing was queued; the caller should try later."""


class PublishUncertain(BrokerUnavailable):
    """The message was handed to RabbitMQ but no confirm came (a timeout, a connection
    lost mid-publish): it may or may not be queued. Re-publishing the same message id
    is safe: the worker sends an id once."""


class BrokerRefused(Exception):
    """RabbitMQ refused the credentials or the vhost in AMQP_URL: retrying will not help
    until the operator fixes them."""


class Broker:
    """One robust connection per process, reconnecting by itself.

    `start()` returns at once; a background task keeps trying to connect, so a
    gateway started before RabbitMQ answers 503 until it is there, then works.
    """

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        reconnect_interval: float = 1.0,
        name: str = "wa-gateway",
        alarm_probe_interval: float = 1.0,
    ) -> None:
        self.url = url
        self.topology = topology
        self.reconnect_interval = reconnect_interval
        self.name = name
        self.connection: AbstractRobustConnection | None = None
        self.failure: Exception | None = None
        self._first_connect = asyncio.Event()
        self._refused = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._was_blocked = False
        self.alarm_probe_interval = alarm_probe_interval

    @property
    def connected(self) -> bool:
        connection = self.connection
        return (
            connection is not None and not connection.is_closed and connection.connected.is_set()
        )

    @property
    def blocked(self) -> bool:
        """True while RabbitMQ blocks this connection's publishes (a memory or disk alarm).

        RabbitMQ says so with connection.blocked / unblocked; aiormq tracks it in an
        event it does not expose, read here (tests/test_broker_alarms.py catches a
        change of aiormq that would break this).
        """
        connection = self.connection
        transport = getattr(connection, "transport", None) if connection is not None else None
        amqp = getattr(transport, "connection", None)
        unblocked = getattr(amqp, "_Connection__connection_unblocked", None)
        blocked = isinstance(unblocked, asyncio.Event) and not unblocked.is_set()
        if blocked != self._was_blocked:  # one line per change, whoever asks first
            self._was_blocked = blocked
            if blocked:
                log.warning("RabbitMQ blocks publishing (a memory or disk alarm): answering 503 until it clears")
            else:
                log.warning("RabbitMQ accepts publishes again")
        return blocked

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="broker-connect")

    async def wait_connected(self, timeout: float | None = None, *, give_up_if_refused: bool = False) -> None:
        """Wait for the first connection; re-raise a TopologyMismatch found on the way.

        With `give_up_if_refused` (one-shot commands), refused credentials raise
        BrokerRefused at once instead of waiting out the timeout.
        """
        waits = [asyncio.ensure_future(self._first_connect.wait())]
        if give_up_if_refused:
            waits.append(asyncio.ensure_future(self._refused.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if not done:
            raise TimeoutError()
        if isinstance(self.failure, (TopologyMismatch, BrokerRefused)) and not self.connected:
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
            except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError) as exc:
                if not isinstance(self.failure, BrokerRefused):
                    log.warning("RabbitMQ refused the user name or password in AMQP_URL (%s); "
                                "fix AMQP_URL; retrying every 10 s", str(exc).split(" - ")[0])
                self.failure = BrokerRefused(
                    "RabbitMQ refused the user name or password in AMQP_URL (ACCESS_REFUSED)"
                )
                self._refused.set()
                await asyncio.sleep(10.0)
                continue
            except CONNECTION_ERRORS as exc:
                if "NOT_ALLOWED" in str(exc):  # the user may not use the vhost
                    self.failure = BrokerRefused(f"RabbitMQ refused access to the vhost in AMQP_URL ({exc})")
                    self._refused.set()
                elif self.failure is None:
                    log.warning("RabbitMQ is not reachable (%s); retrying every few seconds", exc)
                if not isinstance(self.failure, BrokerRefused):
                    self.failure = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with connection.channel() as channel:
                    await declare_topology(channel, self.topology)
                if await unbind_unused_ledger(connection, self.topology):
                    log.warning("WA_LEDGER is off: %s no longer gets copies of new notifications; "
                                "delete it once nothing in it is wanted", self.topology.ledger_queue)
            except TopologyMismatch as exc:
                self.failure = exc
                await connection.close()
                self._first_connect.set()
                return
            self.connection = connection
            self.failure = None
            log.info("connected to RabbitMQ")
            self._first_connect.set()
            if self.alarm_probe_interval > 0:
                self._probe = asyncio.create_task(self._probe_alarms(), name="broker-alarm-probe")
            return

    async def _probe_alarms(self) -> None:
        """Publish a message to nowhere every `alarm_probe_interval` seconds.

        RabbitMQ tells a connection it is blocked (connection.blocked) only when the
        connection publishes during an alarm. Without this probe the first request
        after an alarm would learn it by waiting for a confirm that cannot come; with
        it, `blocked` turns true within a probe interval and requests get a 503 at
        once, without publishing. The probe goes to the default exchange with a
        routing key no queue has, on a channel without confirms: RabbitMQ drops it.
        """
        channel: AbstractChannel | None = None
        while True:
            await asyncio.sleep(self.alarm_probe_interval)
            if not self.connected or self.blocked:
                continue
            try:
                if channel is None or channel.is_closed:
                    assert self.connection is not None
                    channel = await self.connection.channel(publisher_confirms=False)
                await channel.default_exchange.publish(
                    aio_pika.Message(b""), routing_key=ALARM_PROBE_ROUTING_KEY, mandatory=False
                )
            except Exception:  # noqa: BLE001 - a probe that fails says nothing new
                channel = None

    async def channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """A robust channel with publisher confirms, optionally with a prefetch."""
        if self.connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        channel = await self.connection.channel(publisher_confirms=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def queue_depths(self, names: tuple[str, ...]) -> dict[str, tuple[int, int] | None]:
        """(ready messages, consumers) per queue by passive declare; None if it does not exist."""
        if self.connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        depths: dict[str, tuple[int, int] | None] = {}
        for name in names:
            channel = await self.connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                depths[name] = (result.message_count or 0, result.consumer_count or 0)
            except aiormq.exceptions.ChannelNotFoundEntity:
                depths[name] = None
            finally:
                if not channel.is_closed:
                    await channel.close()
        return depths

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection; a broker that does not answer within `timeout` (stalled,
        or blocked by an alarm) gets its socket closed under it, which makes it give
        back every unacked message all the same."""
        for task in (self._task, self._probe):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            await asyncio.wait_for(connection.close(), timeout)
        except (TimeoutError, *CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("RabbitMQ did not close the connection in time (%s); dropping it", type(exc).__name__)
            _abort(connection)


def _abort(connection: AbstractRobustConnection) -> None:
    """Stop aiormq's reader and writer under a connection that no longer answers: the
    writer closes the socket as it ends, and the process can exit."""
    transport = getattr(connection, "transport", None)
    amqp = getattr(transport, "connection", None)
    for name in ("_writer_task", "_reader_task"):
        task = getattr(amqp, name, None)
        if isinstance(task, asyncio.Task):
            task.cancel()


