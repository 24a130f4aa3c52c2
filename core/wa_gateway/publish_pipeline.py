"""Confirmed publishes on one aiormq channel, without aiormq's per-publish machinery.

aiormq's `basic_publish` takes the channel's lock, opens an `asyncio.timeout`, builds
and marshals three pamqp frames and queues them for its writer task (a queue of ten:
with 64 requests at once, publishers wait their turn there), then writes each publish
with its own system call. Half the gateway's time in a publish went there. Here a
publish is synchronous: it numbers itself, registers its confirm future exactly where
aiormq's reader settles it (`confirmations`, `message_id_delivery_tag`, the channel's
future store, so a closing channel fails it), and appends its bytes (amqp_frames) to a
buffer that goes to aiormq's writer once per event-loop turn, as one frame, whatever
the number of publishes in it.

Order is what makes this safe: delivery tags are given in the order the bytes are
written, because numbering and buffering happen in one synchronous step and the buffer
is written in order. Only this pipeline publishes on its channel.
tests/unit/test_amqp_frames.py catches an aiormq that renames what this relies on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame

from .amqp_frames import JsonHeader, body_frames, publish_method

AIORMQ_CHANNEL_PARTS = (
    "delivery_tag", "confirmations", "message_id_delivery_tag", "create_future",
    "write_queue", "max_content_size", "number", "publisher_confirms", "is_closed",
)
"""What of aiormq.Channel the pipeline uses (aiormq 7.2)."""


class PublishPipeline:
    """`publish()` returns the confirm future of a persistent JSON message, already
    numbered and on its way; the caller awaits it (with its own deadline)."""

    def __init__(self, channel: aiormq.Channel) -> None:
        if not channel.publisher_confirms:
            raise ValueError("the publish pipeline needs a channel with publisher confirms")
        self.channel = channel
        self._loop = asyncio.get_running_loop()
        self._header = JsonHeader()
        self._methods: dict[tuple[str, str], bytes] = {}
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._waiting_writer: asyncio.Task[None] | None = None

    def publish(
        self,
        body: bytes,
        *,
        message_id: str,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[Any]:
        """Number the message, register its confirm, buffer its frames. Mandatory, as with
        basic_publish: the future gives the Basic.Ack, or the returned message when no
        queue took it (a PublishError on a channel with on_return_raises)."""
        channel = self.channel
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        number = channel.number
        method = self._methods.get((exchange, routing_key))
        if method is None:
            method = self._methods[exchange, routing_key] = publish_method(
                number, exchange, routing_key, mandatory=True
            )
        data = (
            method
            + self._header.frame(number, len(body), message_id, headers)
            + body_frames(number, body, channel.max_content_size)
        )
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag
        confirmation.add_done_callback(functools.partial(self._forget, message_id, tag))
        self._buffer.append(data)
        if not self._flush_scheduled and self._waiting_writer is None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return confirmation

    def _forget(self, message_id: str, tag: int, _: asyncio.Future[Any]) -> None:
        """What aiormq does when a confirm settles: the id no longer names this publish."""
        ids = self.channel.message_id_delivery_tag
        if ids.get(message_id) == tag:
            del ids[message_id]

    def _flush(self) -> None:
        """Hand the buffer to aiormq's writer as one frame; when its queue is full, a task
        waits for room while later publishes keep buffering behind it, in order."""
        self._flush_scheduled = False
        if not self._buffer or self._waiting_writer is not None:  # that task flushes after its frame
            return
        frame = ChannelFrame(payload=b"".join(self._buffer), should_close=False)
        self._buffer.clear()
        try:
            self.channel.write_queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._waiting_writer = self._loop.create_task(self._put_when_room(frame))

    def close(self) -> None:
        """Stop waiting for room in the writer's queue: the channel is being replaced, and
        a dead connection's queue never drains (its publishes fail with the channel)."""
        if self._waiting_writer is not None:
            self._waiting_writer.cancel()  # one not yet started never runs its `finally`
            self._waiting_writer = None

    async def _put_when_room(self, frame: ChannelFrame) -> None:
        try:
            await self.channel.write_queue.put(frame)
        finally:
            self._waiting_writer = None
        if self._buffer and not self._flush_scheduled:
            self._flush()
