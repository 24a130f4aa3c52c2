"""The ledger writer: status changes from `wa.ledger` into the database, in batches.

Runs in every worker process (several writers share the queue; the database side,
ledger/apply.py, is safe for that). Changes are taken up to BATCH_MAX at a time or
whatever came within BATCH_WAIT, written in one transaction, then acked.

The database may be down. Nothing is acked until it is written: the batch is held
and tried again (one log line when the database goes, one when it is back), the
prefetch stops the flow, and every later change waits in RabbitMQ, durable.
Acceptance and delivery never wait for any of this.

A receipt whose notification is not in the ledger yet (the provider's report raced the
worker's `sent`) is held and tried with the next batches for ORPHAN_WAIT seconds;
after that it is logged and dropped, as a receipt for a message this gateway did not
send (another app on the same WhatsApp number) would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .broker import CONNECTION_ERRORS, BrokerUnavailable, PublishUncertain
from .callback_jobs import CALLBACK_KIND, CallbackJob, make_job
from .consumer import Consumer
from .ledger.apply import Applied, apply_changes
from .ledger.changes import LEDGER_CHANGE_TYPE, StatusChange, change_key
from .ledger.engine import DATABASE_ERRORS, first_line
from .ledger.models import NotificationEvent, NotificationRecord
from .ledger.queries import summaries_on
from .ledger.schema import SchemaMismatch, ensure_schema
from .ledger.urls import safe_database_url
from .ledger_feed import KIND_HEADER, facts_of
from .models import Notification
from .observers import Observers
from .publisher import REPLAYED_AT
from .services import Services

log = logging.getLogger(__name__)

BATCH_MAX = 500
"""Changes per transaction."""
BATCH_WAIT = 0.1
"""Seconds a batch waits for more changes after its first one."""
PREFETCH = 2 * BATCH_MAX
"""Changes taken from RabbitMQ at once: one batch being written, the next one filling."""
TEMPLATE_GENERATION = "template"
"""The life of a notification sent again as its template after a late refusal: once."""
TEMPLATE_AFTER = "x-template-after"
"""Header of a notification sent again as its template after a late refusal: the code."""
TEMPLATE_QUEUED_AT = "x-template-queued-at"
"""Header of the same: when the writer queued it, the time of its `queued` in the timeline
(the writer reads its own copy later, possibly after the worker has sent it)."""
ORPHAN_WAIT = 10.0
"""Seconds a receipt for a message the ledger does not know is tried again."""
ORPHANS_MAX = 200
"""Receipts held at most (they count against the prefetch)."""
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
"""Seconds between tries of a batch the database did not take, doubling up to this."""


_WAIT_FOR_DATABASE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, SchemaMismatch)
"""The database is down, or not yet migrated: hold the changes and try again."""
_TRY_AGAIN: tuple[type[BaseException], ...] = (*_WAIT_FOR_DATABASE, BrokerUnavailable, PublishUncertain)
"""… or their callbacks could not be queued."""


@dataclass(eq=False)
class Pending:
    """A change waiting to be written, and the message that brought it."""

    message: AbstractIncomingMessage
    change: StatusChange
    arrived: float = field(default_factory=time.monotonic)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def read_change(message: AbstractIncomingMessage) -> StatusChange:
    """A StatusChange from either kind of message in `wa.ledger` (ValueError if neither)."""
    headers = message.headers or {}
    if headers.get(KIND_HEADER) == LEDGER_CHANGE_TYPE:
        return StatusChange.from_bytes(message.body)
    # a copy of a notification the gateway published (or a retry tier / a replay gave back)
    notification = Notification.from_bytes(message.body)
    replayed = headers.get(REPLAYED_AT)
    generation = "" if replayed is None else str(replayed)
    refused = headers.get(TEMPLATE_AFTER)
    refused = refused.decode() if isinstance(refused, bytes) else refused
    why, at = None, notification.created_at
    if refused is not None:
        why = f"the text was refused outside the 24-hour window ({refused!s}): sending the template"
        at = _header_time(headers.get(TEMPLATE_QUEUED_AT))
    elif replayed is not None:
        why, at = "replayed from the dead-letter queue", _header_time(replayed)
    return StatusChange(
        key=change_key(notification.id, "queued", 0, generation),
        id=notification.id,
        status="queued",
        at=at,
        channel=notification.channel,
        facts=facts_of(notification),
        replay=replayed is not None,
        message=why,
    )


def _header_time(stamp: object) -> datetime:
    """The time in a header (a replay's, a template's), which orders the timeline; now when
    it has none."""
    if isinstance(stamp, bytes):
        stamp = stamp.decode(errors="replace")
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class LedgerWriter:
    def __init__(self, services: Services, observers: Observers) -> None:
        assert services.ledger is not None, "the ledger writer needs WA_LEDGER on"
        self.services = services
        self.metrics = services.metrics
        self.observers = observers
        self.database_url = services.settings.database_url
        self.engine: AsyncEngine = services.ledger
        self._incoming: asyncio.Queue[Pending] = asyncio.Queue()
        self._orphans: list[Pending] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self.consumer = Consumer(
            services.broker,
            services.topology.ledger_queue,
            services.topology.ledger_arguments(),
            prefetch=PREFETCH,
            handler=self._on_message,
            breakers=[],
        )

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._write_forever(), name="ledger-writer")
        await self.consumer.start()
        log.info("ledger writer consuming %s into %s", self.consumer.queue_name,
                 safe_database_url(self.database_url))

    async def stop(self, timeout: float) -> None:
        """Stop taking changes, write what is held within `timeout`; the rest stays in RabbitMQ."""
        await self.consumer.stop(timeout)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            change = read_change(message)
        except (ValidationError, ValueError) as exc:
            # not a change and not a notification: nothing to record (a bad notification
            # is dead-lettered by the worker from its own queue)
            log.warning("ledger: dropped an unreadable message %s: %s", message.message_id,
                        str(exc).splitlines()[0])
            await message.ack()
            return
        pending = Pending(message, change)
        await self._incoming.put(pending)
        await pending.done  # the consumer counts it in flight until it is written

    async def _collect(self) -> list[Pending]:
        """The orphans due again, then new changes: up to BATCH_MAX, within BATCH_WAIT."""
        wait = 1.0 if self._orphans else None
        batch: list[Pending] = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(self._incoming.get(), wait))
        deadline = time.monotonic() + BATCH_WAIT
        while batch and len(batch) < BATCH_MAX:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._incoming.get(), left))
            except TimeoutError:
                break
        orphans, self._orphans = self._orphans, []
        return orphans + batch

    async def _write_forever(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[Pending]) -> None:
        wait = RETRY_FIRST
        while True:
            try:
                if not self.services.ledger_checked:
                    await ensure_schema(self.engine, self.database_url)
                    self.services.ledger_checked = True
                applied = await apply_changes(self.engine, [p.change for p in batch], self._before_commit)
            except (IntegrityError, DataError) as exc:
                # a change the database refuses whatever we do: find it, keep the rest
                log.warning("ledger: the database refused a batch (%s); writing it one by one",
                            first_line(exc))
                await self._write_one_by_one(batch)
                return
            except _WAIT_FOR_DATABASE as exc:
                self._down(exc)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            except (BrokerUnavailable, PublishUncertain) as exc:
                # a callback could not be queued: nothing was committed; try the batch again
                log.warning("ledger: the status callbacks of a batch could not be queued (%s); "
                            "trying it again", exc)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            self._up()
            await self._settle(batch, applied)
            return

    async def _write_one_by_one(self, batch: Sequence[Pending]) -> None:
        for pending in batch:
            try:
                applied = await apply_changes(self.engine, [pending.change], self._before_commit)
            except (IntegrityError, DataError) as exc:
                log.error("ledger: dropped the change %s the database refuses: %s",
                          pending.change.key, first_line(exc))
                await self._ack(pending)
                continue
            except _TRY_AGAIN:
                self._orphans.append(pending)  # tried again with the next batch
                continue
            await self._settle([pending], applied)

    async def _before_commit(self, connection: AsyncConnection, applied: Applied) -> None:
        """What a batch's applied changes set off, queued (confirmed) before its commit, so
        that a crash or a failed commit repeats them rather than loses them."""
        await self._templates_after_refusal(connection, applied)
        await self._callbacks(connection, applied)

    async def _templates_after_refusal(self, connection: AsyncConnection, applied: Applied) -> None:
        """A receipt said the text was refused outside the 24-hour window (Meta 131047,
        Twilio 63016): send the event's template for that provider, once, as the worker
        does when the send itself is refused."""
        for failure in applied.failures:
            try:
                codes = self.services.plugins.factory(failure.provider).window_codes  # type: ignore[attr-defined]
            except LookupError:
                continue
            if failure.code is None or failure.code not in codes:
                continue
            body = (await connection.execute(
                select(NotificationRecord.body).where(NotificationRecord.id == failure.notification_id)
            )).scalar_one_or_none()
            resend_key = change_key(failure.notification_id, "queued", 0, TEMPLATE_GENERATION)
            already = (await connection.execute(
                select(NotificationEvent.id).where(NotificationEvent.key == resend_key)
            )).first()
            if already is not None:
                continue  # its template went out once already; a failed template stays failed
            notification = Notification.from_bytes(body.encode("utf-8")) if body else None
            if notification is None or failure.provider not in notification.templates:
                log.warning("notification %s was refused outside the 24-hour window (%s) and has no "
                            "template_%s to send instead", failure.notification_id, failure.code, failure.provider)
                continue
            if notification.channel not in self.services.topology.channels:
                continue  # its channel is gone; the failure stays
            await self.services.publisher.publish(
                notification.model_copy(update={"use_template": True}).to_bytes(),
                message_id=notification.id,
                exchange=self.services.topology.work,
                routing_key=self.services.topology.work_queue(notification.channel),
                headers={REPLAYED_AT: TEMPLATE_GENERATION, TEMPLATE_AFTER: failure.code,
                         TEMPLATE_QUEUED_AT: datetime.now(UTC).isoformat()},
            )
            log.info("notification %s: sending its template after a late refusal (%s)",
                     failure.notification_id, failure.code)

    async def _callbacks(self, connection: AsyncConnection, applied: Applied) -> None:
        """Queue one status callback per applied change of a notification that wants them,
        confirmed, inside the batch's transaction (before its commit)."""
        if not applied.callback_urls or not self.services.topology.callbacks:
            return
        summaries = await summaries_on(connection, set(applied.callback_urls))
        jobs = []
        for change, notification_id in applied.applied:
            url = applied.callback_urls.get(notification_id)
            data = summaries.get(notification_id)
            if url is None or data is None:
                continue
            failing = change.status in ("retrying", "dead", "failed")
            data = {
                **data,
                "status": change.status,
                "updated_at": change.at,
                "error": {"code": change.code, "message": change.message} if failing else None,
            }
            jobs.append(make_job(change.key, url, change.status, change.at, data))
        await asyncio.gather(*(self._publish_job(job) for job in jobs))

    async def _publish_job(self, job: CallbackJob) -> None:
        await self.services.publisher.publish(
            job.to_bytes(),
            message_id=job.id,
            exchange="",
            routing_key=self.services.topology.callback_queue,
            headers={KIND_HEADER: CALLBACK_KIND},
        )

    async def _settle(self, batch: Sequence[Pending], applied: Applied) -> None:
        unresolved = set(applied.unresolved)
        now = time.monotonic()
        written_at = datetime.now(UTC)
        done: list[Pending] = []
        for index, pending in enumerate(batch):
            if index in unresolved:
                change = pending.change
                if change.id is None and now - pending.arrived < ORPHAN_WAIT and len(self._orphans) < ORPHANS_MAX:
                    self._orphans.append(pending)
                    continue
                log.info("ledger: %s for %s, which the ledger does not know; ignored",
                         change.status, f"provider message id {change.provider_message_id!r} ({change.provider})"
                         if change.id is None else f"notification {change.id}")
            else:
                self.metrics.ledger_lag.observe(max(0.0, (written_at - pending.change.at).total_seconds()))
            done.append(pending)
        await self._ack_all(done)
        self.metrics.ledger_written.inc(applied.recorded)
        for failure in applied.failures:
            self.metrics.failed.labels(failure.channel, failure.code or "").inc()
            log.warning("notification %s failed after the provider accepted it: %s %s",
                        failure.notification_id, failure.code, failure.message)
            self.observers.notify("message_failed", failure=failure)

    async def _ack_all(self, done: Sequence[Pending]) -> None:
        """Ack a written batch: with one `multiple` ack when that covers exactly these
        messages (one channel, nothing held back), else one by one. Changes arrive in
        delivery-tag order and batches are written one after the other, so only a held
        orphan could sit below the batch's last tag."""
        if not done:
            return
        channels = {id(pending.message.channel) for pending in done}
        if len(done) == 1 or len(channels) > 1 or self._orphans:
            for pending in done:
                await self._ack(pending)
            return
        last = max(done, key=lambda pending: pending.message.delivery_tag or 0)
        try:
            await last.message.ack(multiple=True)
        except (*CONNECTION_ERRORS, RuntimeError) as exc:
            log.debug("ledger: ack of a batch lost (%s); RabbitMQ gives it again", exc)
        for pending in done:
            if not pending.done.done():
                pending.done.set_result(None)

    async def _ack(self, pending: Pending) -> None:
        try:
            await pending.message.ack()
        except (*CONNECTION_ERRORS, RuntimeError) as exc:
            # the channel went: RabbitMQ gives the change again, and its key makes it one
            log.debug("ledger: ack of %s lost (%s)", pending.change.key, exc)
        if not pending.done.done():
            pending.done.set_result(None)

    def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.metrics.ledger_up.set(0)
            log.warning("the ledger database cannot be written (%s); status changes wait in "
                        "RabbitMQ (%s) until it can", first_line(exc), self.consumer.queue_name)

    def _up(self) -> None:
        self.metrics.ledger_up.set(1)
        if self._down_since is not None:
            log.warning("the ledger database takes writes again after %.1f s",
                        time.monotonic() - self._down_since)
            self._down_since = None
