"""Delivery status and idempotency keys, shared by the gateway and the worker.

Redis (REDIS_URL) serves several processes; without it an in-process store serves
the single-process `run` only, and says so at start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import Any, Protocol

from .models import DeliveryStatus

STATUS_TTL = 7 * 24 * 3600
IDEMPOTENCY_TTL = 24 * 3600


class Store(Protocol):
    async def put_status(self, status: DeliveryStatus) -> None: ...
    async def get_status(self, notification_id: str) -> DeliveryStatus | None: ...
    async def forget_status(self, notification_id: str) -> None: ...
    async def claim(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> str | None:
        """Bind `key` to `value` unless it is bound already: then return the bound value."""
        ...
    async def settle(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> None:
        """Replace the value bound to `key` (the final answer once the work is done)."""
        ...
    async def get_claim(self, key: str) -> str | None: ...
    async def release(self, key: str) -> None: ...
    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None: ...
    async def get_breakers(self) -> dict[str, dict[str, Any]]: ...
    async def close(self) -> None: ...


class MemoryStore:
    """Bounded in-process store: right for one process, wrong for several."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._status: OrderedDict[str, DeliveryStatus] = OrderedDict()
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._breakers: dict[str, dict[str, Any]] = {}

    def _trim(self, table: OrderedDict) -> None:  # type: ignore[type-arg]
        while len(table) > self.max_entries:
            table.popitem(last=False)

    async def put_status(self, status: DeliveryStatus) -> None:
        self._status[status.id] = status
        self._status.move_to_end(status.id)
        self._trim(self._status)

    async def get_status(self, notification_id: str) -> DeliveryStatus | None:
        return self._status.get(notification_id)

    async def forget_status(self, notification_id: str) -> None:
        self._status.pop(notification_id, None)

    async def claim(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> str | None:
        bound = await self.get_claim(key)
        if bound is not None:
            return bound
        await self.settle(key, value, ttl)
        return None

    async def settle(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> None:
        self._claims[key] = (value, time.monotonic() + ttl)
        self._claims.move_to_end(key)
        self._trim(self._claims)

    async def get_claim(self, key: str) -> str | None:
        bound = self._claims.get(key)
        return bound[0] if bound is not None and bound[1] > time.monotonic() else None

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)

    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None:
        self._breakers[name] = snapshot

    async def get_breakers(self) -> dict[str, dict[str, Any]]:
        return dict(self._breakers)

    async def close(self) -> None:
        return None


class RedisStore:
    """Redis-backed store; SET NX makes racing claims agree on one id."""

    def __init__(self, url: str, prefix: str = "wa") -> None:
        import redis.asyncio as redis  # imported here: only REDIS_URL users pay for it

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix

    def _status_key(self, notification_id: str) -> str:
        return f"{self.prefix}:status:{notification_id}"

    def _claim_key(self, key: str) -> str:
        return f"{self.prefix}:idempotency:{key}"

    async def put_status(self, status: DeliveryStatus) -> None:
        await self._redis.set(self._status_key(status.id), status.model_dump_json(), ex=STATUS_TTL)

    async def get_status(self, notification_id: str) -> DeliveryStatus | None:
        raw = await self._redis.get(self._status_key(notification_id))
        return None if raw is None else DeliveryStatus.model_validate_json(raw)

    async def forget_status(self, notification_id: str) -> None:
        await self._redis.delete(self._status_key(notification_id))

    async def claim(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> str | None:
        redis_key = self._claim_key(key)
        while not await self._redis.set(redis_key, value, nx=True, ex=int(ttl)):
            bound = await self._redis.get(redis_key)
            if bound is not None:
                return bound.decode()
            # released or expired between the two calls: try to claim again
        return None

    async def settle(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> None:
        await self._redis.set(self._claim_key(key), value, ex=int(ttl))

    async def get_claim(self, key: str) -> str | None:
        bound = await self._redis.get(self._claim_key(key))
        return None if bound is None else bound.decode()

    async def release(self, key: str) -> None:
        await self._redis.delete(self._claim_key(key))

    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None:
        await self._redis.hset(f"{self.prefix}:breakers", name, json.dumps(snapshot))

    async def get_breakers(self) -> dict[str, dict[str, Any]]:
        raw = await self._redis.hgetall(f"{self.prefix}:breakers")
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    async def ping(self) -> None:
        await asyncio.wait_for(self._redis.ping(), 5)

    async def close(self) -> None:
        await self._redis.aclose()


def make_store(redis_url: str | None, prefix: str = "wa") -> Store:
    if redis_url:
        return RedisStore(redis_url, prefix)
    return MemoryStore()
