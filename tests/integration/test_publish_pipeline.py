"""The publish pipeline against the real RabbitMQ: every confirmed publish is in its queue,
byte-exact and with its properties; confirms match the publishes they answer, also when
aiormq's writer queue is full; a message no queue takes and a channel closed before the
confirm are never a success."""

from __future__ import annotations

import asyncio
import json
import random

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp.heartbeat import Heartbeat

from wa_gateway.broker import Broker, BrokerUnavailable, PublishUncertain
from wa_gateway.publisher import Publisher
from wa_gateway.topology import Topology

from ..conftest import get_all

TEXT = "🆕 Permintaan pembelian #{n} oleh Budi — “gudang” 🚚"


@pytest.fixture
async def queue(amqp, prefix):
    """A quorum queue of the test's own, deleted after it."""
    name = f"{prefix}.pipeline"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    await channel.queue_delete(name)
    await channel.close()


@pytest.fixture
async def publisher(make_settings, prefix):
    broker = Broker(make_settings().amqp_url, Topology(prefix=prefix), alarm_probe_interval=0)
    await broker.start()
    await broker.wait_connected(10)
    publisher = Publisher(broker, timeout=10)
    yield publisher
    await publisher.close()
    await broker.close()


def fill_writer_queue(pipeline) -> None:
    """Fill aiormq's writer queue (heartbeats) before its writer task runs again."""
    write_queue = pipeline.channel.write_queue
    while not write_queue.full():
        write_queue.put_nowait(ChannelFrame.marshall(0, [Heartbeat()]))


def body_of(number: int) -> bytes:
    if number == 7:  # three body frames at RabbitMQ's default frame_max of 128 KiB
        return json.dumps({"text": "🚚" * 70_000}, ensure_ascii=False).encode()
    return json.dumps({"n": number, "text": TEXT.format(n=number)}, ensure_ascii=False).encode()


async def test_every_confirmed_publish_is_in_the_queue_byte_exact(publisher, amqp, queue):
    count = 3_000
    pending = list(range(count))
    random.shuffle(pending)

    async def one_publisher() -> None:
        while pending:
            number = pending.pop()
            headers = {"x-attempts": number % 4, "x-note": "ü"} if number % 3 == 0 else None
            await publisher.publish(
                body_of(number), message_id=f"m-{number}", exchange="", routing_key=queue, headers=headers
            )

    await asyncio.gather(*(one_publisher() for _ in range(64)))

    messages = await get_all(amqp, queue)
    assert len(messages) == count
    by_id = {m.message_id: m for m in messages}
    assert set(by_id) == {f"m-{n}" for n in range(count)}
    for number in range(count):
        message = by_id[f"m-{number}"]
        assert message.body == body_of(number)
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        expected = {"x-attempts": number % 4, "x-note": "ü"} if number % 3 == 0 else {}
        headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in message.headers.items()}
        headers.pop("x-delivery-count", None)  # the quorum queue's own
        assert headers == expected


async def test_publishes_stay_in_order_while_aiormqs_writer_queue_is_full(publisher, amqp, queue):
    """Delivery tags are numbered in the order the bytes reach the socket: with the writer's
    queue full (here: heartbeats put before it), publishes wait behind one another and
    every confirm answers its own publish."""
    await publisher.publish(b"{}", message_id="first", exchange="", routing_key=queue)
    pipeline = publisher._pipeline
    assert pipeline is not None
    fill_writer_queue(pipeline)
    ids = [f"o-{n}" for n in range(300)]
    confirms = [pipeline.publish(b"{}", message_id=i, exchange="", routing_key=queue) for i in ids]
    pipeline._flush()  # as the event loop would, before aiormq's writer took anything
    assert pipeline._waiting_writer is not None
    more = [pipeline.publish(b"{}", message_id=f"p-{n}", exchange="", routing_key=queue) for n in range(50)]
    results = await asyncio.wait_for(asyncio.gather(*confirms, *more), 10)
    assert all(type(r).__name__ == "Ack" for r in results)
    received = [m.message_id for m in await get_all(amqp, queue)]
    assert received == ["first", *ids, *(f"p-{n}" for n in range(50))]


async def test_a_message_no_queue_takes_is_not_a_success(publisher, prefix):
    with pytest.raises(BrokerUnavailable, match="no queue is bound"):
        await publisher.publish(b"{}", message_id="lost", exchange="", routing_key=f"{prefix}.absent")


async def test_a_channel_closed_before_the_confirm_is_uncertain_and_the_next_publish_works(
    publisher, amqp, queue
):
    await publisher.publish(b"{}", message_id="warm", exchange="", routing_key=queue)
    ids = [f"c-{n}" for n in range(200)]
    publishes = [
        asyncio.ensure_future(publisher.publish(b"{}", message_id=i, exchange="", routing_key=queue))
        for i in ids
    ]
    await asyncio.sleep(0)  # numbered and buffered, not yet confirmed
    await publisher._pipeline.channel.close()
    results = await asyncio.gather(*publishes, return_exceptions=True)
    confirmed = {i for i, r in zip(ids, results, strict=True) if r is None}
    others = [r for r in results if r is not None]
    print(f"\n{len(confirmed)} confirmed, {len(others)} uncertain")
    assert all(isinstance(r, PublishUncertain) for r in others), others
    await publisher.publish(b"{}", message_id="after", exchange="", routing_key=queue)
    received = {m.message_id for m in await get_all(amqp, queue)}
    assert confirmed <= received  # every success is queued; an uncertain one may or may not be
    assert {"warm", "after"} <= received


async def test_a_closed_pipeline_stops_waiting_for_room_in_the_writer(publisher, queue):
    """The publisher closes a pipeline it replaces (its channel is gone): a task waiting
    for room in a dead connection's writer queue would otherwise wait forever."""
    await publisher.publish(b"{}", message_id="first", exchange="", routing_key=queue)
    pipeline = publisher._pipeline
    fill_writer_queue(pipeline)
    held = pipeline.publish(b"{}", message_id="held", exchange="", routing_key=queue)
    pipeline._flush()
    waiter = pipeline._waiting_writer
    assert waiter is not None

    pipeline.close()
    await asyncio.sleep(0)

    assert waiter.cancelled() and pipeline._waiting_writer is None
    await pipeline.channel.close()  # as when the channel died: its pending confirms fail
    with pytest.raises(aiormq.exceptions.AMQPError):
        await asyncio.wait_for(held, 5)
