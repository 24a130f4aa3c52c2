"""The RabbitMQ side: scratch topologies, pre-filling, and the raw aio-pika baselines.

Every queue a benchmark touches belongs to a `bench<random>-<name>` prefix, named by
the core's own `Topology` so that the names the processes declare and the names we
delete can never drift apart. The baselines use aio-pika directly with the same
message (`persistent_message` from the core, so the properties are identical) and
the same kind of queue: the ratio then isolates what the gateway/worker adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from common import BenchError, Span, say

from wa_gateway.broker import Broker
from wa_gateway.models import Notification, Target
from wa_gateway.publisher import Publisher, persistent_message
from wa_gateway.topology import Topology

RETRY_DELAYS = (5.0,)
"""One retry tier: the benchmarks never retry, and fewer queues are less to clean up."""
GROUP_ID = "120363195657916590@g.us"
ALIAS = "logistic"
PERSON = "budi"
"""A person alias (WA_CONTACT_BUDI_NUMBER): Meta sends to people only."""
PHONE = "+6281234567890"
TEXT = "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


async def check_reachable(url: str) -> None:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        raise BenchError(
            f"RabbitMQ is not reachable at {shown_url(url)} ({type(exc).__name__}: {exc}); "
            "start it (make services) or set AMQP_URL"
        ) from None
    await connection.close()


def sample_notification() -> Notification:
    """The message the gateway itself would queue for {"to": "logistic", "text": TEXT}."""
    return Notification(
        id=str(uuid.uuid4()), to=ALIAS, target=Target(kind="group", address=GROUP_ID), text=TEXT
    )


def person_notification() -> Notification:
    """The message the gateway would queue for {"to": "budi", "text": TEXT}: a phone
    number, which the Meta plugin can send to (groups it cannot)."""
    return Notification(
        id=str(uuid.uuid4()), to=PERSON, target=Target(kind="phone", address=PHONE), text=TEXT
    )


def bench_topology(prefix: str, channels: tuple[str, ...] = ("default",)) -> Topology:
    return Topology(retry_delays=RETRY_DELAYS, prefix=prefix, channels=channels)


@contextlib.asynccontextmanager
async def scratch_topology(url: str, topology: Topology) -> AsyncIterator[Topology]:
    """`topology` for the block, deleted afterwards whatever happened."""
    try:
        yield topology
    finally:
        await delete_topology(url, topology)


async def delete_topology(url: str, topology: Topology) -> None:
    """Delete each queue and exchange on a fresh channel: one failure must not stop the rest."""
    # `.ledger` and the callback queues too, whatever the processes that used the prefix had on
    queues = dataclasses.replace(topology, ledger=True, callbacks=True).all_queues()
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        deletions: list[Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]] = [
            *(lambda ch, q=q: ch.queue_delete(q) for q in queues),
            *(lambda ch, e=e: ch.exchange_delete(e) for e in (topology.work, topology.dead)),
        ]
        for delete in deletions:
            with contextlib.suppress(Exception):
                async with connection.channel() as channel:
                    await delete(channel)


async def queue_depth(url: str, queue: str) -> int:
    """Ready messages in `queue` (passive declare: it must exist, nothing is changed)."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection, connection.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def queue_exists(url: str, queue: str) -> bool:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection, connection.channel() as channel:
        try:
            await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True


async def run_bounded(count: int, concurrency: int, call: Callable[[], Awaitable[None]]) -> None:
    """Call `call` `count` times with at most `concurrency` calls in flight."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def prefill(
    url: str,
    topology: Topology,
    count: int,
    concurrency: int = 64,
    make: Callable[[], Notification] = sample_notification,
) -> None:
    """Queue `count` notifications (`make()`) through the core Publisher, as the gateway does."""
    say(f"pre-filling {topology.work} with {count} messages through broker.Publisher")
    broker = Broker(url, topology, name="bench prefill")
    await broker.start()
    publisher = Publisher(broker)
    try:
        await broker.wait_connected(10)
        await run_bounded(count, concurrency, lambda: publisher.publish_notification(make()))
    finally:
        await publisher.close()
        await broker.close()
    depth = await queue_depth(url, topology.work)
    if depth != count:
        raise BenchError(f"{topology.work} holds {depth} messages after pre-filling {count}")


@contextlib.asynccontextmanager
async def raw_publisher(url: str, queue: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Baseline 1: a confirmed persistent publish into a fresh quorum queue, one channel.

    Yields the call that publishes one message and returns "confirmed"; the load
    generators decide how often and how concurrently it runs.
    """
    body = sample_notification().to_bytes()
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        exchange = channel.default_exchange

        async def publish() -> str:
            message = persistent_message(body, message_id=str(uuid.uuid4()))
            await exchange.publish(message, routing_key=queue)
            return "confirmed"

        yield publish


async def raw_drain(url: str, queue: str, *, count: int, prefetch: int, timeout: float) -> Span:
    """Baseline 2: consume `count` messages with manual ack at `prefetch`; time the acks."""
    say(f"baseline: raw aio-pika consumer draining {count} messages, prefetch {prefetch}")
    acked: list[float] = []
    cpu: list[float] = []  # this process's CPU time at the first and at the last ack
    done = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        acked.append(time.time())
        if len(acked) in (1, count):
            cpu.append(time.process_time())
        if len(acked) >= count:
            done.set()

    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.declare_queue(queue, passive=True)
        await source.consume(on_message)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise BenchError(f"raw consumer acked {len(acked)}/{count} in {timeout:g} s") from None
    return Span(len(acked), acked[0], acked[-1], cpu[-1] - cpu[0])
