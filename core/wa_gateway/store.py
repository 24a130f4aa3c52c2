"""Delivery status and idempotency keys, shared by the gateway and the worker.

Redis (REDIS_URL) serves several processes; without it an in-process store serves
the single-process `run` only, and says so at start.

A store outage is not a bug and not a reason to drop a message: every Redis
connection failure becomes `StoreUnavailable`, the store remembers that it is down
(one log line when it goes, one when it is back), fails fast while it is down
instead of making each caller wait for a socket timeout, and probes Redis in the
background until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from .models import DeliveryStatus

log = logging.getLogger(__name__)

STATUS_TTL = 7 * 24 * 3600
IDEMPOTENCY_TTL = 24 * 3600
CALLBACK_GONE_TTL = 7 * 24 * 3600
"""Seconds a callback URL that answered 410 Gone stays gone for that notification."""
PROBE_INTERVAL = 1.0
"""Seconds between pings while the store is down: how soon "back" is noticed."""

T = TypeVar("T")

# Compare-and-set in one round trip: two gateways racing to take over a stale
# idempotency record must not both win.
_REPLACE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class StoreUnavailable(Exception):
    """The shared store cannot answer now; nothing was read or written. Try later."""


class Store(Protocol):
    @property
    def available(self) -> bool:
        """False while the store is known to be down (a probe is running)."""
        ...
    async def wait_available(self) -> None: ...
    async def put_status(self, status: DeliveryStatus) -> None: ...
    async def get_status(self, notification_id: str) -> DeliveryStatus | None: ...
    async def forget_status(self, notification_id: str) -> None: ...
    async def claim(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> str | None:
        """Bind `key` to `value` unless it is bound already: then return the bound value."""
        ...
    async def settle(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> None:
        """Replace the value bound to `key` (the final answer once the work is done)."""
        ...
    async def replace(self, key: str, expected: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> bool:
        """Bind `key` to `value` only if it is still bound to `expected`; say whether it was."""
        ...
    async def get_claim(self, key: str) -> str | None: ...
    async def release(self, key: str) -> None: ...
    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None: ...
    async def get_breakers(self) -> dict[str, dict[str, Any]]: ...
    async def put_callback_gone(self, notification_id: str, url: str, ttl: float = CALLBACK_GONE_TTL) -> None:
        """`url` answered 410 Gone to a callback of this notification: send it no more."""
        ...
    async def callback_gone(self, notification_id: str, url: str) -> bool: ...
    async def close(self) -> None: ...


class MemoryStore:
    """Bounded in-process store: right for one process, wrong for several.

    Statuses are kept as JSON text (a fifth of the memory of the pydantic objects);
    `status_entries=0` keeps none, for a worker-only process where nothing reads them.
    """

    available = True

    def __init__(self, max_entries: int = 100_000, *, status_entries: int | None = None) -> None:
        self.max_entries = max_entries
        self.status_entries = max_entries if status_entries is None else status_entries
        self._status: OrderedDict[str, str] = OrderedDict()
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._breakers: dict[str, dict[str, Any]] = {}
        self._gone: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def _trim(table: OrderedDict[str, Any], limit: int) -> None:
        while len(table) > limit:
            table.popitem(last=False)

    async def wait_available(self) -> None:
        return None

    async def put_status(self, status: DeliveryStatus) -> None:
        if self.status_entries <= 0:
            return
        self._status[status.id] = status.model_dump_json()
        self._status.move_to_end(status.id)
        self._trim(self._status, self.status_entries)

    async def get_status(self, notification_id: str) -> DeliveryStatus | None:
        raw = self._status.get(notification_id)
        return None if raw is None else DeliveryStatus.model_validate_json(raw)

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
        self._trim(self._claims, self.max_entries)

    async def replace(self, key: str, expected: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> bool:
        if await self.get_claim(key) != expected:
            return False
        await self.settle(key, value, ttl)
        return True

    async def get_claim(self, key: str) -> str | None:
        bound = self._claims.get(key)
        return bound[0] if bound is not None and bound[1] > time.monotonic() else None

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)

    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None:
        self._breakers[name] = snapshot

    async def get_breakers(self) -> dict[str, dict[str, Any]]:
        return dict(self._breakers)

    async def put_callback_gone(self, notification_id: str, url: str, ttl: float = CALLBACK_GONE_TTL) -> None:
        key = _gone_key(notification_id, url)
        self._gone[key] = time.monotonic() + ttl
        self._gone.move_to_end(key)
        self._trim(self._gone, self.max_entries)

    async def callback_gone(self, notification_id: str, url: str) -> bool:
        until = self._gone.get(_gone_key(notification_id, url))
        return until is not None and until > time.monotonic()

    async def close(self) -> None:
        return None


class RedisStore:
    """Redis-backed store; SET NX makes racing claims agree on one id."""

    def __init__(self, url: str, prefix: str = "wa", *, timeout: float = 5.0) -> None:
        import redis.asyncio as redis  # imported here: only REDIS_URL users pay for it
        from redis import exceptions as redis_errors

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._down_errors: tuple[type[BaseException], ...] = (
            redis_errors.ConnectionError,  # refused, reset, loading, max clients
            redis_errors.TimeoutError,
            OSError,
            asyncio.TimeoutError,
        )
        self.prefix = prefix
        self._up = asyncio.Event()
        self._up.set()
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._replace = self._redis.register_script(_REPLACE_SCRIPT)

    # -- health ----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._up.is_set()

    async def wait_available(self) -> None:
        await self._up.wait()

    async def _call(self, operation: Awaitable[T]) -> T:
        """Run one Redis command; a connection failure marks the store down."""
        if not self._up.is_set():
            with contextlib.suppress(Exception):
                operation.close()  # type: ignore[attr-defined]  # never awaited: don't warn
            raise StoreUnavailable("the status store (Redis) is unavailable")
        try:
            return await operation
        except self._down_errors as exc:
            self._went_down(exc)
            raise StoreUnavailable(f"the status store (Redis) is unavailable ({type(exc).__name__})") from None

    def _went_down(self, exc: BaseException) -> None:
        if not self._up.is_set():
            return
        self._up.clear()
        self._down_since = time.monotonic()
        log.warning("status store (Redis) unavailable: %s: %s; probing every %g s",
                    type(exc).__name__, exc, PROBE_INTERVAL)
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_up(), name="redis-probe")

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await asyncio.wait_for(self._redis.ping(), PROBE_INTERVAL * 5)
            except Exception:  # noqa: BLE001 - any failure means "still down"
                continue
            # connections opened before the outage are dead: drop them, or the first
            # commands after it would fail on them and mark the store down again
            await self._redis.connection_pool.disconnect()
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            log.warning("status store (Redis) is back after %.1f s", down_for)
            self._down_since = None
            self._up.set()
            return

    # -- commands --------------------------------------------------------------------

    def _status_key(self, notification_id: str) -> str:
        return f"{self.prefix}:status:{notification_id}"

    def _claim_key(self, key: str) -> str:
        return f"{self.prefix}:idempotency:{key}"

    async def put_status(self, status: DeliveryStatus) -> None:
        await self._call(self._redis.set(self._status_key(status.id), status.model_dump_json(), ex=STATUS_TTL))

    async def get_status(self, notification_id: str) -> DeliveryStatus | None:
        raw = await self._call(self._redis.get(self._status_key(notification_id)))
        return None if raw is None else DeliveryStatus.model_validate_json(raw)

    async def forget_status(self, notification_id: str) -> None:
        await self._call(self._redis.delete(self._status_key(notification_id)))

    async def claim(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> str | None:
        redis_key = self._claim_key(key)
        while not await self._call(self._redis.set(redis_key, value, nx=True, ex=int(ttl))):
            bound = await self._call(self._redis.get(redis_key))
            if bound is not None:
                return _text(bound)
            # released or expired between the two calls: try to claim again
        return None

    async def settle(self, key: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> None:
        await self._call(self._redis.set(self._claim_key(key), value, ex=int(ttl)))

    async def replace(self, key: str, expected: str, value: str, ttl: float = IDEMPOTENCY_TTL) -> bool:
        done = await self._call(self._replace(keys=[self._claim_key(key)], args=[expected, value, int(ttl)]))
        return bool(done)

    async def get_claim(self, key: str) -> str | None:
        bound = await self._call(self._redis.get(self._claim_key(key)))
        return None if bound is None else _text(bound)

    async def release(self, key: str) -> None:
        await self._call(self._redis.delete(self._claim_key(key)))

    async def put_breaker(self, name: str, snapshot: dict[str, Any]) -> None:
        await self._call(self._redis.hset(f"{self.prefix}:breakers", name, json.dumps(snapshot)))

    async def get_breakers(self) -> dict[str, dict[str, Any]]:
        raw = await self._call(self._redis.hgetall(f"{self.prefix}:breakers"))
        return {_text(name): json.loads(value) for name, value in raw.items()}

    async def put_callback_gone(self, notification_id: str, url: str, ttl: float = CALLBACK_GONE_TTL) -> None:
        key = f"{self.prefix}:callback-gone:{_gone_key(notification_id, url)}"
        await self._call(self._redis.set(key, "1", ex=int(ttl)))

    async def callback_gone(self, notification_id: str, url: str) -> bool:
        key = f"{self.prefix}:callback-gone:{_gone_key(notification_id, url)}"
        return bool(await self._call(self._redis.exists(key)))

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self._redis.aclose()


def _gone_key(notification_id: str, url: str) -> str:
    """One short key per (notification, URL): a URL has up to 2,048 characters."""
    return f"{notification_id}:{hashlib.sha256(url.encode()).hexdigest()[:32]}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def make_store(redis_url: str | None, prefix: str = "wa", *, keep_status: bool = True) -> Store:
    """Redis when configured; else the in-process store, keeping statuses only where
    this process can be asked for them (`keep_status`)."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    return MemoryStore(status_entries=None if keep_status else 0)
