"""The callback sender: status callbacks from `wa.callbacks` POSTed to the calling apps.

A lane of its own (DESIGN.md "Callbacks"): its own consumer, channel and prefetch and
its own HTTP session, so a receiver that is slow, down or hanging holds up nothing but
its own callbacks; sending never waits for any of this.

Each job (callback_jobs.py) is signed by the Standard Webhooks specification and POSTed
as it is. A 2xx within CALLBACK_TIMEOUT is delivered; 410 Gone means "stop": that
notification's later callbacks to that URL are acked unsent. Anything else goes to a
retry tier of `wa.retry.callbacks.*`, and after the last one to `wa.dead` with
`x-kind: callback`, replayable with `wa-gateway dlq replay`. Every move is the
worker's (outcomes.Mover): the copy confirmed, then the job acked.

Callbacks of one notification are POSTed one after the other in the order this
process took them, so a receiver usually sees `queued` before `sent`; a retried one
can still come after a later one (the body's `timestamp` orders them).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from standardwebhooks import Webhook

from . import __version__
from .callback_jobs import CALLBACK_KIND, CallbackJob
from .consumer import Consumer
from .http_provider import parse_retry_after
from .ledger_feed import KIND_HEADER
from .logs import bind_notification
from .outcomes import Mover, attempts_of
from .publisher import header_int
from .resilience import pick_retry_tier
from .services import Services
from .store import StoreUnavailable

log = logging.getLogger(__name__)

PREFETCH = 32
"""Callbacks in flight at once in one process (each may wait CALLBACK_TIMEOUT)."""
CALLBACK_TIMEOUT = 15.0
"""Seconds a receiver has to answer a callback with a 2xx."""
CONNECT_TIMEOUT = 5.0
"""Seconds to connect to a receiver (part of CALLBACK_TIMEOUT)."""
USER_AGENT = f"wa-gateway/{__version__}"
CALLBACK_URL_HEADER = "x-callback-url"
"""A dead callback's URL, for `wa-gateway dlq list`."""


@dataclass(frozen=True)
class Answer:
    """How one POST ended: `error` is None for a 2xx."""

    error: str | None
    gone: bool = False
    retry_after: float | None = None


def where(url: str) -> str:
    """A callback URL for logs and reasons: scheme, host and path, without the query
    (it may carry the receiver's token)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    except ValueError:
        return "(a malformed URL)"


def now() -> datetime:
    return datetime.now(UTC)


class CallbackSender:
    """Consumes `<prefix>.callbacks` and POSTs each job, at least once."""

    def __init__(self, services: Services) -> None:
        secret = services.settings.gateway_callback_secret
        assert secret is not None, "the callback sender needs GATEWAY_CALLBACK_SECRET"
        self.services = services
        self.topology = services.topology
        self.metrics = services.metrics
        self.store = services.store
        self.webhook = Webhook(secret.get_secret_value())
        self.mover = Mover(services.publisher)
        self._http: aiohttp.ClientSession | None = None
        self._order: dict[str, tuple[asyncio.Lock, int]] = {}
        self.consumer = Consumer(
            services.broker,
            self.topology.callback_queue,
            self.topology.work_arguments(),
            prefetch=PREFETCH,
            handler=self._on_message,
            breakers=[],
        )

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT, connect=CONNECT_TIMEOUT),
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),  # one receiver's cookies are no other's business
        )
        await self.consumer.start()
        log.info("callback sender consuming %s with prefetch %d", self.consumer.queue_name, PREFETCH)

    async def stop(self, timeout: float) -> None:
        """Stop taking callbacks, finish the POSTs in flight within `timeout`; the rest
        go back to the queue (and are POSTed again: the receiver deduplicates)."""
        await self.consumer.stop(timeout)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            job = CallbackJob.from_bytes(message.body)
        except (ValidationError, ValueError) as exc:
            reason = f"unreadable callback job: {str(exc).splitlines()[0]}"
            await self._dead_letter(message, None, reason, dict(message.headers or {}))
            return
        bind_notification(job.notification_id)
        async with self._in_order(job.notification_id):
            await self._handle(message, job)

    @contextlib.asynccontextmanager
    async def _in_order(self, notification_id: str) -> AsyncIterator[None]:
        """One notification's callbacks one at a time, in the order they were taken."""
        lock, users = self._order.get(notification_id) or (asyncio.Lock(), 0)
        self._order[notification_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._order[notification_id]
            if users <= 1:
                del self._order[notification_id]
            else:
                self._order[notification_id] = (lock, users - 1)

    async def _handle(self, message: AbstractIncomingMessage, job: CallbackJob) -> None:
        if await self._gone(job):
            log.info("callback %s (%s) not sent: %s answered 410 Gone to this notification before",
                     job.id, job.status, where(job.url))
            await message.ack()
            self.metrics.callbacks.labels("gone").inc()
            return
        started = time.monotonic()
        answer = await self._post(job)
        self.metrics.callback_seconds.observe(time.monotonic() - started)
        if answer.error is None:
            await message.ack()
            log.debug("callback %s (%s) delivered to %s", job.id, job.status, where(job.url))
            self.metrics.callbacks.labels("delivered").inc()
        elif answer.gone:
            await self._remember_gone(job)
            await message.ack()
            log.info("callback %s (%s): %s answered 410 Gone; no more callbacks of this "
                     "notification go there", job.id, job.status, where(job.url))
            self.metrics.callbacks.labels("gone").inc()
        else:
            await self._failed(message, job, answer)

    async def _gone(self, job: CallbackJob) -> bool:
        try:
            return await self.store.callback_gone(job.notification_id, job.url)
        except StoreUnavailable:
            return False  # cannot tell: send it (a receiver that said 410 says it again)

    async def _remember_gone(self, job: CallbackJob) -> None:
        try:
            await self.store.put_callback_gone(job.notification_id, job.url)
        except StoreUnavailable as exc:
            log.warning("could not remember that %s is gone for notification %s (%s); its later "
                        "callbacks are POSTed there anyway", where(job.url), job.notification_id, exc)

    async def _post(self, job: CallbackJob) -> Answer:
        """One signed POST of the job's body, exactly; redirects are not followed."""
        assert self._http is not None, "start() first"
        timestamp = now()
        headers = {
            "webhook-id": job.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": self.webhook.sign(job.id, timestamp, job.body),
            "Content-Type": "application/json",
        }
        try:
            async with self._http.post(
                job.url, data=job.body.encode("utf-8"), headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return Answer(None)
                if status == 410:
                    return Answer("HTTP 410", gone=True)
                retry_after = (
                    parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
                )
                reason = f"HTTP {status}"
                if 300 <= status < 400:
                    reason += " (a redirect; callbacks do not follow redirects)"
                return Answer(reason, retry_after=retry_after)
        except aiohttp.ConnectionTimeoutError:
            return Answer(f"no connection within {CONNECT_TIMEOUT:g} s")
        except TimeoutError:
            return Answer(f"no answer within {CALLBACK_TIMEOUT:g} s")
        except aiohttp.ClientConnectorDNSError:
            return Answer(f"DNS: cannot resolve {urlsplit(job.url).hostname}")
        except aiohttp.ClientConnectorError as exc:
            if exc.os_error.errno == errno.ECONNREFUSED:
                return Answer("connection refused")
            return Answer(f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            text = (str(exc).splitlines() or [""])[0][:200]
            return Answer(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    async def _failed(self, message: AbstractIncomingMessage, job: CallbackJob, answer: Answer) -> None:
        """A retry tier while there are tiers left, else the dead-letter queue."""
        assert answer.error is not None
        attempts = attempts_of(message) + 1
        headers = dict(message.headers or {})
        headers.update({
            KIND_HEADER: CALLBACK_KIND,
            "x-attempts": attempts,
            "x-first-failed-at": headers.get("x-first-failed-at") or now().isoformat(),
            "x-last-error": answer.error[:500],
        })
        tier = pick_retry_tier(self.topology.retry_delays, attempts, answer.retry_after)
        if tier is None:
            reason = f"callback to {where(job.url)} failed {attempts} times: {answer.error}"
            await self._dead_letter(message, job, reason, headers)
            return
        delay = self.topology.retry_delays[tier]
        retry_queue = self.topology.callback_retry_queues()[tier]
        if not await self.mover.move(message, headers, exchange="", routing_key=retry_queue):
            return
        log.info("callback %s (%s) to %s failed: %s; again in %g s", job.id, job.status, where(job.url),
                 answer.error, delay)
        self.metrics.callbacks.labels("retried").inc()

    async def _dead_letter(
        self, message: AbstractIncomingMessage, job: CallbackJob | None, reason: str, headers: dict[str, Any]
    ) -> None:
        headers.update({
            KIND_HEADER: CALLBACK_KIND,
            "x-error": reason[:1000],
            "x-attempts": header_int(headers, "x-attempts"),
            "x-first-failed-at": headers.get("x-first-failed-at") or now().isoformat(),
            "x-dead-at": now().isoformat(),
        })
        if job is not None:
            headers[CALLBACK_URL_HEADER] = job.url
        if not await self.mover.move(message, headers, exchange=self.topology.dead, routing_key=""):
            return
        log.warning("callback %s dead-lettered: %s", message.message_id, reason)
        self.metrics.callbacks.labels("dead").inc()
