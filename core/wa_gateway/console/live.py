"""What RabbitMQ and the store say right now: queue depths and each channel's breaker.

Neither may keep a page waiting: RabbitMQ is asked only while the process is connected
and for at most QUEUE_TIMEOUT seconds, and a store that does not answer leaves the
breakers unknown. Each answer says why when it has nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..services import Services
from ..store import StoreUnavailable

log = logging.getLogger(__name__)

QUEUE_TIMEOUT = 2.0


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int | None
    """None: the queue does not exist (yet)."""
    consumers: int | None


@dataclass(frozen=True)
class Depths:
    queues: list[QueueDepth]
    unknown_why: str | None = None


async def queue_depths(services: Services) -> Depths:
    """Every queue of the topology, the dead-letter queue first."""
    if not services.broker.connected:
        return Depths([], f"RabbitMQ is not connected ({services.broker.failure or 'connecting'})")
    try:
        depths = await asyncio.wait_for(services.queue_depths(), QUEUE_TIMEOUT)
    except TimeoutError:
        return Depths([], f"RabbitMQ did not answer within {QUEUE_TIMEOUT:g} s")
    except Exception as exc:  # noqa: BLE001 - a page must answer while the broker is in trouble
        log.warning("console: reading queue depths failed: %s", exc)
        return Depths([], f"RabbitMQ could not be asked ({type(exc).__name__})")
    return Depths([
        QueueDepth(name, None, None) if depth is None else QueueDepth(name, depth[0], depth[1])
        for name, depth in depths.items()
    ])


@dataclass(frozen=True)
class BreakerView:
    state: str
    """closed, open, half-open, or unknown."""
    detail: str


async def breakers(services: Services, *, now: float | None = None) -> dict[str, BreakerView]:
    """Each channel's breaker: this process's own when it runs a worker (`run`), else
    as the workers last reported it to the store (shared with REDIS_URL)."""
    now = time.time() if now is None else now
    unknown_why = None
    try:
        reported: dict[str, dict[str, Any]] = await services.store.get_breakers()
    except StoreUnavailable as exc:
        reported, unknown_why = {}, f"the store does not answer ({exc})"
    views = {}
    for name in services.channels.senders:
        live = services.breakers.get(name)
        if live is not None:
            views[name] = _view({**live.snapshot(), "changed_at": None}, now, "this process")
        elif name in reported:
            views[name] = _view(reported[name], now, "reported")
        elif unknown_why is not None:
            views[name] = BreakerView("unknown", unknown_why)
        elif reported or services.settings.redis_url is not None:
            views[name] = BreakerView("closed", "no worker has reported a change")
        else:
            views[name] = BreakerView("unknown", "no worker has reported; REDIS_URL shares breaker state")
    return views


def _view(snapshot: dict[str, Any], now: float, source: str) -> BreakerView:
    state = str(snapshot.get("state", "unknown"))
    details = [f"failures in a row: {snapshot.get('consecutive_failures', '?')}"]
    changed_at = snapshot.get("changed_at")
    if state == "open":
        retry_in = float(snapshot.get("retry_in") or 0)
        left = retry_in - (now - changed_at) if isinstance(changed_at, (int, float)) else retry_in
        details.append(f"probe in {left:.0f} s" if left > 0 else "cooldown over: the next message probes")
    if isinstance(changed_at, (int, float)):
        details.append(f"reported {max(0.0, now - changed_at):.0f} s ago")
    else:
        details.append(source)
    return BreakerView(state, ", ".join(details))
