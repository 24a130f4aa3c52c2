"""Idempotency-Key: a retried request gets the first answer and sends nothing twice.

The first request claims the key (atomically: Redis SET NX) with a "pending"
record, publishes, then settles the record with its answer. A second request with
the same key waits while the record is pending, returns the settled answer, or
takes over if the first one gave up (released the key after a 503).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from .store import Store

MAX_KEY_LENGTH = 255


class KeyReused(Exception):
    """The key was first used with another body."""


class StillPending(Exception):
    """The first request with this key has not finished in time."""


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentRequest:
    def __init__(self, store: Store, key: str, api_key: str | None, body: Any, *, wait: float) -> None:
        scope = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else "open"
        self.store = store
        self.key = f"{scope}:{key}"  # per API key: two clients may pick the same key
        self.fingerprint = fingerprint(body)
        self.wait = wait

    def _record(self, state: str, answer: dict[str, Any]) -> str:
        return json.dumps({"state": state, "fingerprint": self.fingerprint, "answer": answer})

    async def begin(self, answer: dict[str, Any]) -> dict[str, Any] | None:
        """Claim the key for `answer`; return the earlier answer if the key was used."""
        deadline = time.monotonic() + self.wait
        while True:
            bound = await self.store.claim(self.key, self._record("pending", answer))
            if bound is None:
                return None
            record = json.loads(bound)
            if record["fingerprint"] != self.fingerprint:
                raise KeyReused()
            if record["state"] == "done":
                return record["answer"]
            if time.monotonic() > deadline:
                raise StillPending()
            await asyncio.sleep(0.02)

    async def done(self, answer: dict[str, Any]) -> None:
        await self.store.settle(self.key, self._record("done", answer))

    async def abandon(self) -> None:
        await self.store.release(self.key)
