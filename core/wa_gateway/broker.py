"""The connection to RabbitMQ: one per process, reconnecting by itself.

The reliability chain is: publisher confirms (publisher.py) -> durable quorum queues
(topology.py) -> manual ack after the work is done (the worker). This module keeps
the connection, says whether RabbitMQ blocks it (alarms), and closes it in bounded time.

AMQP_URL may list several nodes of one cluster (`amqp_urls`): a process connects to the
first that answers and, when its node goes away, to the next one (`RotatingConnection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustConnection,
)
from yarl import URL

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


def amqp_urls(value: str) -> list[str]:
    """The nodes AMQP_URL lists, in order, each as one full URL.

    Two forms, which may be mixed:

    - full URLs separated by commas:
      `amqp://guest:guest@h1:5672/,amqp://guest:guest@h2:5673/`
    - the short form, one URL with several `host:port` separated by commas; the user,
      password, vhost and query are shared: `amqp://guest:guest@h1:5672,h2:5673,h3/vhost`

    A comma inside a password is written `%2C`. Raises ValueError with one line naming
    the bad node (without its password).
    """
    if not value.strip():
        raise ValueError("expected amqp://user:password@host:port/vhost")
    pieces = [piece.strip() for piece in value.split(",")]
    groups: list[list[str]] = []
    for number, piece in enumerate(pieces, 1):
        if not piece:
            raise ValueError(f"entry {number} of {len(pieces)} is empty (a stray comma?)")
        if "://" in piece or not groups:
            groups.append([piece])
        else:
            groups[-1].append(piece)
    urls: list[str] = []
    for group in groups:
        urls += _short_form(group) if len(group) > 1 else group
    for number, url in enumerate(urls, 1):
        problem = _url_problem(url)
        if problem:
            where = f"node {number} of {len(urls)} ({_shown(url)})" if len(urls) > 1 else _shown(url)
            raise ValueError(f"{where}: {problem}" if len(urls) > 1 else problem)
    return urls


def _short_form(group: list[str]) -> list[str]:
    """`amqp://u:p@h1:5672`, `h2:5673`, `h3/vhost` -> three full URLs sharing u:p and /vhost."""
    first, *hosts = group
    head = urlsplit(first)
    if head.path or head.query or head.fragment:
        raise ValueError(
            f"{_shown(first)}: with several hosts in one URL, only the last host may be "
            "followed by /vhost (amqp://user:password@h1:5672,h2:5672/vhost)"
        )
    userinfo, _, first_host = head.netloc.rpartition("@")
    last = hosts[-1]
    cut = min((i for i in (last.find("/"), last.find("?")) if i >= 0), default=len(last))
    hosts[-1], tail = last[:cut], last[cut:]
    prefix = f"{head.scheme}://" + (f"{userinfo}@" if userinfo else "")
    return [f"{prefix}{host}{tail}" for host in (first_host, *hosts)]


def _url_problem(url: str) -> str | None:
    """What is wrong with one node's URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        return "expected amqp://user:password@host:port/vhost"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        return "the port is not a number"
    return None


def _shown(url: str) -> str:
    """A URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def shown_amqp_url(value: str) -> str:
    """AMQP_URL for messages: every node's password replaced by ***."""
    try:
        return ",".join(_shown(url) for url in amqp_urls(value))
    except ValueError:
        return "(an invalid AMQP_URL)"


def node_name(url: str | URL) -> str:
    """host:port of a node, for logs."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 5671 if parts.scheme == "amqps" else 5672
    return f"{parts.hostname}:{port or default}"


class BrokerUnavailable(Exception):
    """RabbitMQ did not take the message: nothing was queued; the caller should try later."""


class PublishUncertain(BrokerUnavailable):
    """The message was handed to RabbitMQ but no confirm came (a timeout, a connection
    lost mid-publish): it may or may not be queued. Re-publishing the same message id
    is safe: the worker sends an id once."""


class BrokerRefused(Exception):
    """RabbitMQ refused the credentials or the vhost in AMQP_URL: retrying will not help
    until the operator fixes them."""


_ON_CONFIRM_FRAME = "_on_confirm_frame"
"""aiormq's channel method that every publisher confirm (ack or nack) goes through;
tests/unit/test_amqp_urls.py catches an aiormq that renames it."""


class _Channel(aio_pika.RobustChannel):
    """A channel that gives way to a fresh one after RabbitMQ refuses a publish (nack).

    RabbitMQ 3.10's quorum-queue client in the channel (rabbit_fifo_client) registers
    the channel as a publisher on its first publish to a queue, asking the node it
    believes leads it. If that node is down (the first publish came within the
    second or so a failover takes to elect a new leader), the channel refuses that
    publish and keeps refusing every later one to that queue for its whole life.
    A fresh channel asks again, by then the new leader. So after a nack (seen on the
    confirm frames) this channel closes itself, at most four times a second, and the
    Publisher opens a new one for the next publish. The nacked publish was answered
    503; publishes still waiting on this channel become PublishUncertain (503): never
    a 202 without a confirm.
    """

    FRESH_FOR = 0.25
    """Seconds after opening during which a nack does not close the channel: a queue
    that really refuses (a length limit with reject-publish) costs at most four new
    channels a second."""
    _warned_at = -3600.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened_at = time.monotonic()
        self._closing: asyncio.Task[None] | None = None

    async def _on_open(self) -> None:
        await super()._on_open()
        self._opened_at = time.monotonic()
        if self.publisher_confirms:
            # The publisher may publish through aio-pika's Exchange or straight on the
            # aiormq channel; either way the confirm frames pass through this method.
            underlay = await self.get_underlay_channel()
            on_confirm = getattr(underlay, _ON_CONFIRM_FRAME)

            async def watch_confirm(frame: Any) -> None:
                if isinstance(frame, aiormq.spec.Basic.Nack):
                    self.nacked()
                await on_confirm(frame)

            setattr(underlay, _ON_CONFIRM_FRAME, watch_confirm)

    def nacked(self) -> None:
        now = time.monotonic()
        if self._closing is not None or self.is_closed or now - self._opened_at < self.FRESH_FOR:
            return
        if now - _Channel._warned_at > 60:
            _Channel._warned_at = now
            log.warning("RabbitMQ refused a publish (nack); publishing on a new channel from now on "
                        "(after a quorum queue's leader moved, an old channel may refuse every publish)")
        self._closing = asyncio.ensure_future(self._close_quietly())

    async def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close(), 5)


_CONNECT_TRANSPORT = "_RobustConnection__connect_transport"
"""aio-pika's one step that opens a transport to `self.url`, at start and at every
reconnection attempt (aio-pika 10.2): `RotatingConnection` points `url` at the next
node before it. tests/unit/test_amqp_urls.py catches an aio-pika without it."""
_EVERY_ATTEMPT = _CONNECT_TRANSPORT in vars(aio_pika.RobustConnection)
"""Without that step (older aio-pika) the connection moves to the next node only when
its node goes away, not after each failed attempt."""


class RotatingConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, over the nodes of a cluster.

    aio-pika reconnects to the one URL it was given, and restores the channels, their
    prefetch and their consumers on the new connection. This connection starts at one
    node and moves to the next in the list (round robin) at every attempt after the
    first: when its node goes away it reconnects to another one; a node that refuses
    costs one `reconnect_interval`, one that does not answer the connect timeout too.
    With one node it is aio-pika's own.

    Nothing in flight crosses the switch: a publish waiting for its confirm fails with
    the old channel (PublishUncertain: 503), and RabbitMQ gives the old connection's
    unacked deliveries to another consumer (a duplicate at worst, never a loss).
    """

    CHANNEL_CLASS = _Channel

    def __init__(self, nodes: Sequence[str], first: int, **kwargs: Any) -> None:
        self.nodes = [URL(node) for node in nodes]
        self.node = first
        self._attempts = 0
        super().__init__(self.nodes[first], **kwargs)

    def _next_node(self) -> None:
        if len(self.nodes) > 1:
            self.node = (self.node + 1) % len(self.nodes)
            self.url = self.nodes[self.node]

    async def _RobustConnection__connect_transport(self) -> None:
        """Every attempt after the first goes to the next node."""
        if self._attempts:
            self._next_node()
        self._attempts += 1
        await getattr(super(), _CONNECT_TRANSPORT)()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not _EVERY_ATTEMPT and not self._close_called:
            self._next_node()  # an aio-pika without that step: move on when the node goes away
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self.connection_attempt > 1 and len(self.nodes) > 1:
            log.warning("RabbitMQ: reconnected to node %s (%d of %d in AMQP_URL)",
                        node_name(self.url), self.node + 1, len(self.nodes))


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
        self.urls = amqp_urls(url)
        """The nodes AMQP_URL lists: the first that answers is used, then the next ones."""
        self.topology = topology
        self.reconnect_interval = reconnect_interval
        self.name = name
        self.connection: RotatingConnection | None = None
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

    @property
    def node(self) -> str | None:
        """host:port of the node this process is connected to (or reconnecting from)."""
        connection = self.connection
        return node_name(connection.url) if connection is not None else None

    async def _open(self, first: int) -> RotatingConnection:
        connection = RotatingConnection(
            self.urls,
            first,
            reconnect_interval=self.reconnect_interval,
            client_properties={"connection_name": self.name},
        )
        try:
            await connection.connect(timeout=5)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection

    async def _open_first_that_answers(self) -> RotatingConnection:
        """A connection to the first node in AMQP_URL that answers; the last node's error
        if none does, or the refusal of one that refused the credentials or the vhost."""
        refusal: Exception | None = None
        for index in range(len(self.urls)):
            try:
                return await self._open(index)
            except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError) as exc:
                refusal = exc
            except CONNECTION_ERRORS as exc:
                if "NOT_ALLOWED" in str(exc):
                    refusal = exc
                if index == len(self.urls) - 1:
                    raise refusal or exc from None
        assert refusal is not None
        raise refusal

    async def _connect_forever(self) -> None:
        delay = self.reconnect_interval
        while True:
            try:
                connection = await self._open_first_that_answers()
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
                    where = f" at any of the {len(self.urls)} nodes in AMQP_URL" if len(self.urls) > 1 else ""
                    log.warning("RabbitMQ is not reachable%s (%s); retrying every few seconds", where, exc)
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
            except (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
                # the node went away (or its queues are electing a leader) while declaring
                log.warning("RabbitMQ: declaring the queues failed (%s: %s); trying again",
                            type(exc).__name__, exc)
                self.failure = exc
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 5)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.connection = connection
            self.failure = None
            if len(self.urls) > 1:
                log.info("connected to RabbitMQ at node %s (%d of %d in AMQP_URL)",
                         node_name(connection.url), connection.node + 1, len(self.urls))
            else:
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
        back every unacked message all the same. Every wait here is bounded, even on a
        task that does not end when cancelled (aio-pika reconnecting to nodes that are all
        gone): the process must be able to exit."""
        for task in (self._task, self._probe):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=timeout)
        connection, self.connection = self.connection, None
        if connection is None:
            return
        problem = await close_within(connection.close(), timeout)
        if problem is not None:
            log.warning("RabbitMQ did not close the connection in time (%s); dropping it",
                        type(problem).__name__)
            _abort(connection)


async def close_within(closing: Awaitable[Any], timeout: float) -> BaseException | None:
    """Wait at most `timeout` for a close, even one that ignores its cancellation (aio-pika's
    robust objects while they reconnect): the process must be able to exit. Returns what
    went wrong: the close's own exception, a TimeoutError when it did not end in time
    (then it is cancelled), or None."""
    task = asyncio.ensure_future(closing)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        return TimeoutError()
    return None if task.cancelled() else task.exception()


def _abort(connection: AbstractRobustConnection) -> None:
    """Stop aiormq's reader and writer under a connection that no longer answers: the
    writer closes the socket as it ends, and the process can exit."""
    transport = getattr(connection, "transport", None)
    amqp = getattr(transport, "connection", None)
    for name in ("_writer_task", "_reader_task"):
        task = getattr(amqp, name, None)
        if isinstance(task, asyncio.Task):
            task.cancel()


