"""Prometheus metrics of one process, on a registry of its own (tests build many).

Gauges of what other parts own (breakers, queue depths, the store) are set at scrape
time from what the caller hands `render`: this module depends on nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_CALLBACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)
"""Up to the 15 s a receiver has to answer a callback."""
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "wa_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self.publish_seconds = Histogram(
            "wa_publish_seconds", "Time to a RabbitMQ publisher confirm", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.sent = Counter(
            "wa_messages_sent", "Messages a provider accepted", ["channel", "provider"], registry=r
        )
        self.retried = Counter(
            "wa_messages_retried", "Messages moved to a retry queue", ["channel", "provider", "code"], registry=r
        )
        self.dead = Counter(
            "wa_messages_dead", "Messages dead-lettered", ["channel", "provider", "reason", "code"], registry=r
        )
        self.provider_seconds = Histogram(
            "wa_provider_seconds", "Provider send latency", ["channel", "provider", "outcome"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.breaker_state = Gauge(
            "wa_breaker_state", "Circuit breaker per channel: 0 closed, 1 half-open, 2 open", ["channel"], registry=r
        )
        self.queue_messages = Gauge(
            "wa_queue_messages", "Ready messages per queue (read at scrape time)", ["queue"], registry=r
        )
        self.dedup_unchecked = Counter(
            "wa_dedup_unchecked", "Messages sent without the already-sent check (the store was down)",
            registry=r,
        )
        self.status_pending = Gauge(
            "wa_status_pending", "Status updates waiting in memory for the store to come back", registry=r
        )
        self.failed = Counter(
            "wa_messages_failed", "Messages the provider accepted, then reported undeliverable (a receipt)",
            ["channel", "code"], registry=r,
        )
        self.receipts = Counter(
            "wa_receipts", "Provider receipts taken by the webhooks", ["channel", "status"], registry=r
        )
        self.ledger_written = Counter(
            "wa_ledger_changes_written", "Status changes recorded in the ledger's database", registry=r
        )
        self.ledger_up = Gauge(
            "wa_ledger_up", "1 while the ledger's database takes writes, 0 while changes wait in RabbitMQ",
            registry=r,
        )
        self.ledger_lag = Histogram(
            "wa_ledger_lag_seconds", "From a status change to its row in the ledger",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.callbacks = Counter(
            "wa_callbacks", "Status callbacks by outcome: delivered, retried, dead, gone (410, or after one)",
            ["outcome"], registry=r,
        )
        self.callback_seconds = Histogram(
            "wa_callback_seconds", "Time of a status callback's POST, to its answer or failure",
            buckets=_CALLBACK_BUCKETS, registry=r,
        )
        self.store_up = Gauge("wa_store_up", "1 while the status store answers, 0 while it is down", registry=r)
        self.broker_blocked = Gauge(
            "wa_broker_blocked", "1 while RabbitMQ blocks this process's publishes (a resource alarm)",
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set and kept: `labels()` takes
        a lock and checks its arguments every time, and the worker and the gateway ask for
        the same few children once per message or request."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count_request(self, method: str, route: str, status: int) -> None:
        """wa_http_requests +1, by method, route pattern and status."""
        self.child(self.requests, method, route, str(status)).inc()

    def render(
        self,
        *,
        breakers: Mapping[str, str],
        queue_depths: Mapping[str, int],
        store_up: bool,
        broker_blocked: bool,
    ) -> bytes:
        """The exposition text, with the gauges that are read at scrape time set from
        what the caller read: breaker states by provider, ready messages by queue."""
        for name, state in breakers.items():
            self.breaker_state.labels(name).set(BREAKER_STATES[state])
        for queue, ready in queue_depths.items():
            self.queue_messages.labels(queue).set(ready)
        self.store_up.set(1 if store_up else 0)
        self.broker_blocked.set(1 if broker_blocked else 0)
        return generate_latest(self.registry)
