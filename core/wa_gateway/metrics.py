"""Prometheus metrics of one process, on a registry of its own (tests build many).

Queue depths are read from RabbitMQ when /metrics is scraped (passive declares,
cached for a second), so a scrape always shows the broker's current view.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .services import Services

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "wa_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.publish_seconds = Histogram(
            "wa_publish_seconds", "Time to a RabbitMQ publisher confirm", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.sent = Counter("wa_messages_sent", "Messages a provider accepted", ["provider"], registry=r)
        self.retried = Counter(
            "wa_messages_retried", "Messages moved to a retry queue", ["provider", "code"], registry=r
        )
        self.dead = Counter(
            "wa_messages_dead", "Messages dead-lettered", ["provider", "reason", "code"], registry=r
        )
        self.provider_seconds = Histogram(
            "wa_provider_seconds", "Provider send latency", ["provider", "outcome"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.breaker_state = Gauge(
            "wa_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["provider"], registry=r
        )
        self.queue_messages = Gauge(
            "wa_queue_messages", "Ready messages per queue (read at scrape time)", ["queue"], registry=r
        )
        self._queues_read_at = 0.0

    async def render(self, services: Services) -> bytes:
        await self._refresh(services)
        return generate_latest(self.registry)

    async def _refresh(self, services: Services) -> None:
        for name, breaker in services.breakers.items():
            self.breaker_state.labels(name).set(BREAKER_STATES[breaker.state.value])
        if time.monotonic() - self._queues_read_at < 1.0 or not services.broker.connected:
            return
        self._queues_read_at = time.monotonic()
        from .status import queue_depths  # status owns the passive-declare logic

        try:
            depths = await queue_depths(services, (services.topology.work, services.topology.dead))
        except Exception:  # a scrape must answer even when the broker is in trouble
            return
        for queue, depth in depths.items():
            if depth is not None:
                self.queue_messages.labels(queue).set(depth[0])
