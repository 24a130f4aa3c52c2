"""The dead letters the console shows: the first SHOWN of the dead-letter queue, read the
way `wa-gateway dlq list` reads them (never acked, so every one goes back where it was
when the channel closes) and parsed by its own `DeadMessage.read`.

`dlq.list_dead` takes every message one basic.get at a time, about a millisecond and a
half each: 7 s for 5,000 dead letters, too slow for a page. Here one consumer with a
prefetch of SHOWN receives them in a few round trips, and the page says how many more
the queue holds. Replaying and purging stay `dlq.replay` and `dlq.purge`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from ..commands.dlq import DeadMessage
from ..services import Services

SHOWN = 200
WAIT = 3.0
"""Seconds to wait for the messages the queue said it holds (another process may take
some meanwhile: then the page shows those that came)."""


@dataclass(frozen=True)
class Peeked:
    message: DeadMessage
    provider_code: str | None
    """x-provider-code: the provider's own code for the refusal, where it gave one."""


@dataclass(frozen=True)
class DeadLetters:
    shown: list[Peeked]
    total: int
    """How many the queue held when it was read."""


async def peek(services: Services, limit: int | None = None) -> DeadLetters:
    limit = SHOWN if limit is None else limit
    channel = await services.broker.channel(prefetch=limit)
    try:
        queue = await channel.declare_queue(services.topology.dead, durable=True)
        total = queue.declaration_result.message_count or 0
        wanted = min(limit, total)
        received: list[AbstractIncomingMessage] = []
        if wanted:
            enough = asyncio.Event()

            async def take(message: AbstractIncomingMessage) -> None:
                received.append(message)
                if len(received) >= wanted:
                    enough.set()

            await queue.consume(take, no_ack=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), WAIT)
        shown = [
            Peeked(DeadMessage.read(message), _code(message)) for message in received[:wanted]
        ]
        return DeadLetters(shown, max(total, len(shown)))
    finally:
        await channel.close()  # nothing was acked: every message goes back to the queue


def _code(message: AbstractIncomingMessage) -> str | None:
    code = (message.headers or {}).get("x-provider-code")
    if isinstance(code, bytes):
        code = code.decode("utf-8", "replace")
    return None if code is None or code == "" else str(code)
