"""The long-lived resources of one process: settings, plugins, broker, publisher, store.

The gateway and the worker each take a Services; in `run` they share one, so the
process keeps one AMQP connection and one store. Opening is reference-counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .broker import Broker
from .channels import Channel, ChannelPlan, read_channels
from .errors import ConfigError
from .events import EventCatalog
from .ledger.engine import LedgerUnavailable, create_engine
from .ledger.schema import SchemaMismatch, ensure_schema
from .metrics import Metrics
from .plugins import PluginSet, UnknownProvider, make_plugin_manager
from .provider import Capabilities
from .publisher import Publisher
from .resilience import CircuitBreaker
from .settings import Settings
from .store import Store, StoreUnavailable, make_store
from .topology import Topology

log = logging.getLogger(__name__)


class Services:
    def __init__(
        self,
        settings: Settings,
        plugins: PluginSet | None = None,
        *,
        store: Store | None = None,
        connection_name: str = "wa-gateway",
        serves_http: bool = True,
    ) -> None:
        """`serves_http=False` (a worker-only process): nobody asks this process for
        delivery statuses, so the in-process store keeps none, and it does not probe
        for RabbitMQ alarms (the probe would get its consumer connection blocked)."""
        self.settings = settings
        self.plugins = plugins if plugins is not None else make_plugin_manager()
        self.channels: ChannelPlan = read_channels(settings)
        self.channel_capabilities: dict[str, Capabilities] = {
            name: self._capabilities(sender) for name, sender in self.channels.senders.items()
        }
        self._check_pins()
        self.events = EventCatalog.load(
            settings.wa_templates, {**settings.group_aliases, **self.channels.people}
        )
        self._check_event_channels()
        self._check_event_templates()
        self.topology = Topology(
            retry_delays=tuple(settings.wa_retry_delays),
            prefix=settings.wa_queue_prefix,
            channels=self.channels.routable,
            ledger=settings.wa_ledger,
            callbacks=settings.callbacks,
        )
        self.broker = Broker(
            settings.amqp_url, self.topology, name=connection_name, alarm_probe_interval=1.0 if serves_http else 0
        )
        self.publisher = Publisher(self.broker, timeout=settings.wa_publish_timeout)
        self.store: Store = store if store is not None else make_store(
            settings.redis_url, settings.wa_queue_prefix, keep_status=serves_http
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self.metrics = Metrics()
        self.ledger: AsyncEngine | None = create_engine(settings.database_url) if settings.wa_ledger else None
        """The ledger's engine (WA_LEDGER on): the gateway reads it, the worker's writer
        writes it. It connects on first use; `check_ledger` checks the schema at start."""
        self.ledger_checked = False
        self._background: set[asyncio.Task[None]] = set()
        self._users = 0
        self._lock = asyncio.Lock()
        self.close_timeout = 5.0
        """Seconds closing may wait for RabbitMQ; a stopping process sets what its
        shutdown deadline leaves."""

    def _capabilities(self, sender: Channel) -> Capabilities:
        try:
            return self.plugins.capabilities(sender.provider)
        except UnknownProvider as exc:
            if not self.channels.legacy:
                variable = f"WA_CHANNEL_{sender.name.upper()}_PROVIDER"
            else:  # the first release's names: the legacy fallback is WA_FALLBACK_PROVIDER's
                variable = "WA_PROVIDER" if sender.queue else "WA_FALLBACK_PROVIDER"
            raise ConfigError(f"{variable}: {exc}") from None

    def _check_pins(self) -> None:
        """An alias pinned to a channel that can never send to it stops start-up."""
        for alias, channel in self.channels.pins.items():
            kind = "group" if alias in self.settings.group_aliases else "phone"
            refusal = self.channel_capabilities[channel].refusal(kind, "")
            if refusal:
                variable = f"WA_{'GROUP' if kind == 'group' else 'CONTACT'}_{alias.upper()}_CHANNEL"
                provider = self.channels.channel(channel).provider
                raise ConfigError(f"{variable}: channel {channel!r} ({provider}) {refusal}")

    def _check_event_channels(self) -> None:
        """An event's channel exists and can send to each of its aliases not pinned elsewhere
        (else every POST of that event would be a 422)."""
        for event in self.events.events.values():
            if event.channel is None:
                continue
            if event.channel not in self.channels.routable:
                raise ConfigError(
                    f"{self.events.path}: [{event.name}] channel {event.channel!r} is not in "
                    f"WA_CHANNELS ({', '.join(self.channels.routable)})"
                )
            for alias in event.targets:
                if alias.lower() in self.channels.pins:
                    continue
                kind = "group" if alias.lower() in self.settings.group_aliases else "phone"
                refusal = self.channel_capabilities[event.channel].refusal(kind, "")
                if refusal:
                    provider = self.channels.channel(event.channel).provider
                    raise ConfigError(
                        f"{self.events.path}: [{event.name}] sends to {alias!r}, but its channel "
                        f"{event.channel!r} ({provider}) {refusal}"
                    )

    async def check_ledger(self) -> None:
        """At start: SQLite is created and migrated; a PostgreSQL schema this release
        cannot use stops the process (SchemaMismatch, one line). A database that does not
        answer is not a reason to stop: acceptance and delivery go on, and status changes
        wait in RabbitMQ until it answers (the writer checks the schema then)."""
        if self.ledger is None:
            return
        try:
            await ensure_schema(self.ledger, self.settings.database_url)
        except SchemaMismatch:
            raise
        except LedgerUnavailable as exc:
            log.warning("%s; status changes wait in RabbitMQ until it answers", exc)
            return
        self.ledger_checked = True

    def _check_event_templates(self) -> None:
        """Each `template_<provider>` names an installed provider that can send it as written."""
        for event in self.events.events.values():
            for provider, spec in event.provider_templates.items():
                where = f"{self.events.path}: [{event.name}] template_{provider}"
                try:
                    factory = self.plugins.factory(provider)
                except UnknownProvider as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                refusal = factory.template_refusal(spec)  # type: ignore[attr-defined]
                if refusal:
                    raise ConfigError(f"{where}: {refusal}")

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Services]:
        """Open on first use, close after the last user leaves."""
        async with self._lock:
            if self._users == 0:
                await self.broker.start()
            self._users += 1
        try:
            yield self
        finally:
            async with self._lock:
                self._users -= 1
                if self._users == 0:
                    await self.publisher.close(min(self.close_timeout, 2.0))
                    await self.broker.close(self.close_timeout)
                    await self.store.close()
                    if self.ledger is not None:
                        await self.ledger.dispose()
                    for task in list(self._background):
                        task.cancel()

    def breaker(self, channel: str) -> CircuitBreaker:
        """The circuit breaker of one channel (sender), created on first use."""
        if channel not in self.breakers:
            self.breakers[channel] = CircuitBreaker(
                channel,
                threshold=self.settings.wa_breaker_threshold,
                cooldown=self.settings.wa_breaker_cooldown,
                on_change=self._report_breaker,
            )
        return self.breakers[channel]

    def _report_breaker(self, breaker: CircuitBreaker) -> None:
        """Publish a breaker change to the store, so `wa-gateway status` sees it."""
        snapshot = {**breaker.snapshot(), "changed_at": time.time()}
        task = asyncio.get_running_loop().create_task(self._put_breaker(breaker.name, snapshot))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _put_breaker(self, name: str, snapshot: dict[str, Any]) -> None:
        with contextlib.suppress(StoreUnavailable):  # the next change reports again
            await self.store.put_breaker(name, snapshot)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, detail): ready while RabbitMQ takes publishes and the store answers."""
        failure = self.broker.failure
        blocked = self.broker.connected and self.broker.blocked
        if not self.broker.connected:
            broker = f"unavailable: {failure or 'connecting'}"
        elif blocked:
            broker = "blocked: RabbitMQ refuses publishes (a memory or disk alarm)"
        else:
            broker = "connected"
        store = "ok" if self.store.available else "unavailable"
        detail = {
            "broker": broker,
            "store": store,
            "provider": self.settings.wa_provider,
            "channels": {
                name: {"provider": sender.provider, "queue": self.topology.work_queue(name) if sender.queue else None}
                for name, sender in self.channels.senders.items()
            },
            "breakers": {name: b.snapshot() for name, b in self.breakers.items()},
        }
        return broker == "connected" and store == "ok", detail

    async def queue_depths(self, names: tuple[str, ...] | None = None) -> dict[str, tuple[int, int] | None]:
        return await self.broker.queue_depths(names or self.topology.all_queues())
