"""The worker's one place for delivery status: write it, and ask "was this already sent?".

Each status goes two ways: to the store (Redis: the quick "already sent?" check and the
status right after the 202) and, as a StatusChange through `wa.ledger`, to the ledger's
database (the status of record, with its timeline).

The store (Redis) may be down. Delivery never waits for it:
- a status that cannot be written is kept (the latest per notification, bounded) and
  written when the store is back, so the ack is never held up and nothing is lost
  short of the bound (overflow is counted and logged);
- the "already sent?" check asks this process's own memory of recent sends first,
  then the store. Without the store a message is sent unchecked: a duplicate is then
  possible only for a copy that another worker sent and did not ack (it crashed, or
  its channel died) during the outage, so at most that worker's prefetch. Each
  unchecked send is counted in `wa_dedup_unchecked_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from .ledger.changes import StatusChange
from .ledger_feed import LedgerFeed
from .metrics import Metrics
from .models import DeliveryStatus
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

RECENT_SENDS = 20_000
"""Ids this process sent lately, for the duplicate check without a round trip (~2 MiB)."""
PENDING_LIMIT = 50_000
"""Status writes kept while the store is down; older ones beyond this are dropped."""


class StatusRecorder:
    def __init__(self, store: Store, metrics: Metrics, feed: LedgerFeed | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.feed = feed
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._pending: OrderedDict[str, DeliveryStatus] = OrderedDict()
        self._dropped = 0
        self._flusher: asyncio.Task[None] | None = None

    async def already_sent(self, notification_id: str) -> bool:
        if notification_id in self._recent:
            return True
        try:
            status = await self.store.get_status(notification_id)
        except StoreUnavailable:
            self.metrics.dedup_unchecked.inc()
            return False
        return status is not None and status.status == "sent"

    @property
    def takes_changes(self) -> bool:
        """Whether `record` publishes changes (the ledger is on): else none need building."""
        return self.feed is not None and self.feed.enabled

    async def record(self, status: DeliveryStatus, change: StatusChange | None = None) -> None:
        """Write a status to the store (now, or kept for when it is back) and publish
        its `change` for the ledger, at once; never raises for an outage. Returns once
        RabbitMQ confirmed the change: then the message it describes may be acked."""
        if change is not None and self.feed is not None and self.feed.enabled:
            # the publish in a task of its own, the write in this one: both at once, one
            # task per change instead of gather's two
            published = asyncio.ensure_future(self.feed.publish(change))
            try:
                await self._write(status)
            except BaseException:  # cancelled (a stopping worker): the publish too, as gather did
                published.cancel()
                raise
            await published
        else:
            await self._write(status)

    async def _write(self, status: DeliveryStatus) -> None:
        if status.status == "sent":
            self._recent[status.id] = None
            self._recent.move_to_end(status.id)
            while len(self._recent) > RECENT_SENDS:
                self._recent.popitem(last=False)
        if not self._pending:
            try:
                await self.store.put_status(status)
                return
            except StoreUnavailable:
                pass
        self._keep(status)

    def _keep(self, status: DeliveryStatus) -> None:
        if not self._pending:
            log.warning("status writes wait in memory until the store is back")
        self._pending[status.id] = status
        self._pending.move_to_end(status.id)
        while len(self._pending) > PENDING_LIMIT:
            self._pending.popitem(last=False)
            self._dropped += 1
        self.metrics.status_pending.set(len(self._pending))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_when_back())

    async def _flush_when_back(self) -> None:
        while self._pending:
            await self.store.wait_available()
            written = 0
            while self._pending:
                notification_id, status = next(iter(self._pending.items()))
                try:
                    await self.store.put_status(status)
                except StoreUnavailable:
                    break  # down again: wait for it
                # a newer status for the same id may have arrived while writing this one
                if self._pending.get(notification_id) is status:
                    del self._pending[notification_id]
                written += 1
            self.metrics.status_pending.set(len(self._pending))
            if written:
                log.warning("wrote %d status updates kept while the store was down%s", written,
                            f" ({self._dropped} older ones were dropped)" if self._dropped else "")
                self._dropped = 0

    async def close(self, timeout: float = 2.0) -> None:
        """Give kept writes a moment to land (the store may be back), then stop trying."""
        if self._flusher is None or self._flusher.done():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
        self._flusher.cancel()
        await asyncio.gather(self._flusher, return_exceptions=True)
        if self._pending:
            log.warning("%d status updates were not written: the store stayed down", len(self._pending))
