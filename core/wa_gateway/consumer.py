"""Consuming the work queue: prefetch, pause and resume, driven by the breakers.

The consumer takes messages with the full prefetch while any route's breaker is
closed, one at a time while the best is half-open (the probe), and none while every
breaker is open: then messages wait in the queue instead of burning their retries.
It learns of breaker changes by subscribing to them; the delivery code never calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from .broker import CONNECTION_ERRORS, Broker
from .resilience import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

BROKER_STEP_TIMEOUT = 2.0
"""Longest wait for one broker round trip while stopping: a stalled broker must not
hold a stopping process (closing the connection gives back what it holds)."""

MessageHandler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumer:
    """One queue, one channel, a prefetch that follows the breakers' states."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        arguments: dict[str, Any],
        *,
        prefetch: int,
        handler: MessageHandler,
        breakers: Sequence[CircuitBreaker],
    ) -> None:
        self.broker = broker
        self.queue_name = queue
        self.arguments = arguments
        self.prefetch = prefetch
        self.handler = handler
        self.breakers = list(breakers)
        self.current_prefetch = 0
        """Prefetch of the running consumer; 0 while paused."""
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._control = asyncio.Lock()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake: asyncio.TimerHandle | None = None
        self._stopping = False
        self._started = False
        for breaker in self.breakers:
            breaker.subscribe(self._breaker_changed)

    @property
    def paused(self) -> bool:
        return self._consumer_tag is None

    def wanted_prefetch(self) -> int:
        """Full while a breaker is closed (or there are none), 1 for a half-open probe,
        0 while all are open."""
        states = {breaker.state for breaker in self.breakers}
        if not states or BreakerState.CLOSED in states:
            return self.prefetch
        if BreakerState.HALF_OPEN in states:
            return 1
        return 0

    async def start(self) -> None:
        """Wait for RabbitMQ, then consume. Returns once the consumer is registered."""
        await self.broker.wait_connected()
        self._channel = await self.broker.channel()
        self._queue = await self._channel.declare_queue(self.queue_name, durable=True, arguments=self.arguments)
        await self._apply()

    def _breaker_changed(self, breaker: CircuitBreaker) -> None:
        if self._channel is not None and not self._stopping:
            self._spawn(self._apply())

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self) -> None:
        """Bring the consumer to the prefetch the breakers want now."""
        async with self._control:
            if self._stopping or self._channel is None or self._queue is None:
                return
            wanted = self.wanted_prefetch()
            if wanted == 0 and self.paused:
                self._wake_after_cooldown()  # still open: look again after the cooldown
                return
            if wanted == self.current_prefetch and not self.paused:
                return
            was_paused = self.paused and self.current_prefetch == 0 and self._started
            if self._consumer_tag is not None:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._queue.cancel(self._consumer_tag)
                self._consumer_tag = None
            self.current_prefetch = 0
            if wanted == 0:
                log.warning("worker paused: every provider's breaker is open; messages wait in %s",
                            self.queue_name)
                self._wake_after_cooldown()
                return
            await self._channel.set_qos(prefetch_count=wanted)
            self._consumer_tag = await self._queue.consume(self._on_message)
            self.current_prefetch = wanted
            self._started = True
            if was_paused:
                log.warning("worker resumed consuming %s with prefetch %d", self.queue_name, wanted)

    def _wake_after_cooldown(self) -> None:
        """Breakers turn half-open when read after their cooldown: read them then."""
        if self._wake is not None:
            self._wake.cancel()
        wait = min((b.remaining_cooldown() for b in self.breakers), default=0.0)
        self._wake = asyncio.get_running_loop().call_later(wait + 0.01, lambda: self._spawn(self._apply()))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self.handler(message)
        except CONNECTION_ERRORS as exc:
            # The channel died under us: RabbitMQ redelivers the message; nothing to do.
            log.warning("lost the channel while handling %s: %s", message.message_id, exc)
        except Exception:
            log.exception("bug while handling message %s; it goes back to the queue", message.message_id)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            self._inflight.discard(task)

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, let held ones finish within `timeout`, give back the rest.

        Every broker call here is bounded: with a stalled broker, closing the
        connection afterwards returns the unacked messages to the queue.
        """
        self._stopping = True
        if self._wake is not None:
            self._wake.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer_tag is not None and self._queue is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), BROKER_STEP_TIMEOUT)
            self._consumer_tag = None
        pending = set(self._inflight)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d messages unfinished at shutdown go back to the queue", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                # returns any unacked message to the queue
                await asyncio.wait_for(self._channel.close(), BROKER_STEP_TIMEOUT)
