"""Idempotency-Key: a retried request gets the first answer and sends nothing twice.

The first request claims the key (atomically: Redis SET NX) with a `pending` record
that carries the notification ids it will publish and a lease, publishes, then
settles the record as `done` with its answer. A second request with the same key:
- gets the settled answer (`done`), or a 422 if its body differs;
- waits while the record is `pending` and its lease runs;
- takes the record over when the first request failed (`retry`: RabbitMQ did not
  take or did not confirm the message) or died (a `pending` lease that ran out), and
  publishes again under the SAME ids. A message that did reach the queue is then
  there twice with one id, and the worker sends an id once.

So a key stays bound to its ids for its whole life: a client that retries with its
key never creates a second notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .store import Store

MAX_KEY_LENGTH = 255
POLL_INTERVAL = 0.02


class KeyReused(Exception):
    """The key was first used with another body."""


class StillPending(Exception):
    """The first request with this key has not finished in time."""


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Claim:
    """What the request holding the key does: replay `earlier`, or publish `answer`."""

    answer: dict[str, Any]
    earlier: dict[str, Any] | None = None
    """The settled answer of the first request: replay it, publish nothing."""
    resumed: bool = False
    """The key was taken over from a failed or dead request: publish under `answer`'s ids."""


class IdempotentRequest:
    def __init__(
        self, store: Store, key: str, api_key: str | None, body: Any, *, lease: float
    ) -> None:
        """`lease`: how long a pending record is trusted before another request may take
        it over; longer than the publish it covers (WA_PUBLISH_TIMEOUT)."""
        scope = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else "open"
        self.store = store
        self.key = f"{scope}:{key}"  # per API key: two clients may pick the same key
        self.fingerprint = fingerprint(body)
        self.lease = lease

    def _record(self, state: str, answer: dict[str, Any]) -> str:
        record: dict[str, Any] = {"state": state, "fingerprint": self.fingerprint, "answer": answer}
        if state == "pending":
            record["until"] = time.time() + self.lease
        return json.dumps(record)

    @contextlib.asynccontextmanager
    async def claim(self, answer: dict[str, Any]) -> AsyncIterator[Claim]:
        """Hold the key for the body of the `async with`.

        On a normal exit the record is settled with the answer; on any error it is
        marked `retry` (ids kept), so a retry with the key publishes the same ids.
        """
        claim = await self._begin(answer)
        if claim.earlier is not None:
            yield claim
            return
        try:
            yield claim
        except BaseException:
            with contextlib.suppress(Exception):  # the lease covers a store that is down now
                await asyncio.shield(self.store.settle(self.key, self._record("retry", claim.answer)))
            raise
        await self.store.settle(self.key, self._record("done", claim.answer))

    async def _begin(self, answer: dict[str, Any]) -> Claim:
        deadline = time.monotonic() + self.lease
        while True:
            bound = await self.store.claim(self.key, self._record("pending", answer))
            if bound is None:
                return Claim(answer)
            record = json.loads(bound)
            if record["fingerprint"] != self.fingerprint:
                raise KeyReused()
            if record["state"] == "done":
                return Claim(record["answer"], earlier=record["answer"])
            stale = record["state"] == "retry" or record.get("until", 0) < time.time()
            if stale:
                if await self.store.replace(self.key, bound, self._record("pending", record["answer"])):
                    return Claim(record["answer"], resumed=True)
                continue  # another request took it over first: look again
            if time.monotonic() > deadline:
                raise StillPending()
            await asyncio.sleep(POLL_INTERVAL)
