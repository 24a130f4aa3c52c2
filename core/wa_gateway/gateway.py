"""The HTTP gateway: validate, publish with a confirm, answer 202. Never calls WhatsApp.

`make_app(services)` builds the aiohttp application; the long-lived resources (AMQP
connection, store) belong to `Services` and are opened and closed in one cleanup
context, so `run` can share them between the gateway and the worker. Reading the body
is in http_body, what every request goes through in http_middlewares, and what a
request becomes in compose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from .api_errors import ApiError, unavailable
from .app_keys import SERVICES, STOPPING
from .broker import BrokerUnavailable, PublishUncertain
from .compose import InvalidNotification, build_notifications, parse_request
from .http_body import MAX_BODY, expect_continue, read_json_object
from .http_ledger import get_notifications, get_notify
from .http_middlewares import API_KEY, RateLimits, make_middleware
from .http_webhooks import WEBHOOK_PROVIDERS, WebhookProviders, webhook
from .idempotency import IdempotentRequest, KeyReused, StillPending, valid_key
from .logs import bind_notification
from .models import DeliveryStatus, Notification
from .services import Services
from .store import StoreUnavailable

log = logging.getLogger(__name__)

SERVER_OPTIONS = {"auto_decompress": False}
"""aiohttp server options the gateway needs: it inflates bodies itself (http_body._inflate)."""



class QueueDepths:
    """Ready messages of the work, dead, ledger and callback queues, read from RabbitMQ at most once a
    second however often /metrics is scraped; the last reading while the broker is away."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._read_at = 0.0
        self._last: dict[str, int] = {}

    async def read(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._read_at < 1.0 or not self.services.broker.connected:
            return self._last
        self._read_at = now
        topology = self.services.topology
        try:
            lanes = [name for name, on in ((topology.ledger_queue, topology.ledger),
                                           (topology.callback_queue, topology.callbacks)) if on]
            depths = await self.services.queue_depths((*topology.work_queues(), topology.dead, *lanes))
        except Exception:  # noqa: BLE001 - a scrape must answer even when the broker is in trouble
            return self._last
        self._last = {name: depth[0] for name, depth in depths.items() if depth is not None}
        return self._last


QUEUE_DEPTHS = web.AppKey("queue_depths", QueueDepths)


async def post_notify(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if request.app[STOPPING]["value"]:
        raise unavailable("the gateway is shutting down; try again")
    body = await read_json_object(request)
    try:
        notifications = build_notifications(services, parse_request(body))
    except InvalidNotification as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    answer = _answer(notifications)
    idempotent = _idempotent_request(request, services, body)
    if idempotent is None:
        await _publish(services, notifications)
        return web.json_response(answer, status=202)
    try:
        async with idempotent.claim(answer) as claim:
            if claim.earlier is not None:
                return web.json_response(claim.earlier, status=202, headers={"Idempotent-Replayed": "true"})
            if claim.resumed:
                notifications = _with_ids(notifications, claim.answer)
            await _publish(services, notifications)
    except KeyReused:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with another body") from None
    except StillPending:
        raise unavailable("a request with this Idempotency-Key is still in progress") from None
    return web.json_response(claim.answer, status=202)


def _answer(notifications: list[Notification]) -> dict[str, Any]:
    """The 202 body (`Queued`, written out: a model per request for a two-key dict)."""
    if len(notifications) == 1:
        bind_notification(notifications[0].id)
        return {"id": notifications[0].id, "status": "queued"}
    ids = [n.id for n in notifications]
    bind_notification(",".join(ids))
    return {"id": ids[0], "status": "queued", "ids": ids}


def _with_ids(notifications: list[Notification], answer: dict[str, Any]) -> list[Notification]:
    """The same notifications under the ids an earlier, failed request with this key used."""
    ids = answer.get("ids") or [answer["id"]]
    if len(ids) != len(notifications):  # the events file changed the targets since
        raise ApiError(422, "idempotency_key_reused",
                       "this Idempotency-Key was used for a different set of targets")
    bind_notification(ids[0] if len(ids) == 1 else ",".join(ids))
    return [n.model_copy(update={"id": i}) for n, i in zip(notifications, ids, strict=True)]


def _idempotent_request(request: web.Request, services: Services, body: dict) -> IdempotentRequest | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not valid_key(key):
        raise ApiError(400, "invalid_header", "Idempotency-Key must be 1-255 printable ASCII characters")
    lease = services.settings.wa_publish_timeout + 1
    return IdempotentRequest(services.store, key, request.get(API_KEY), body, lease=lease)


async def _publish(services: Services, notifications: list[Notification]) -> None:
    """Record `queued` (when the store answers), publish each with a confirm.

    The store is not needed to queue a message: while it is down the status is simply
    not written (the worker's `sent` comes later). A publish that surely failed
    forgets the record; one whose confirm did not come says so in the 503.
    """
    recorded = []
    for notification in notifications:
        try:
            await services.store.put_status(DeliveryStatus(id=notification.id, status="queued"))
        except StoreUnavailable:
            break
        recorded.append(notification.id)
    try:
        started = time.perf_counter()
        try:
            if len(notifications) == 1:  # the common case, without a task per publish
                await services.publisher.publish_notification(notifications[0])
            else:
                await _publish_all(services, notifications)
        finally:
            services.metrics.publish_seconds.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("queued for %s", ", ".join(n.to for n in notifications))
    except PublishUncertain as exc:
        raise unavailable(
            f"{exc}: the message may or may not be queued. Retry with the same Idempotency-Key "
            "to have it sent once (without a key, a retry may send it twice)"
        ) from None
    except BrokerUnavailable as exc:
        for notification_id in recorded:
            with contextlib.suppress(StoreUnavailable):
                await services.store.forget_status(notification_id)
        raise unavailable(f"the message queue is unavailable ({exc}); nothing was queued, try again") from None


async def _publish_all(services: Services, notifications: list[Notification]) -> None:
    """Publish concurrently; if any publish is uncertain, the whole request is."""
    results = await asyncio.gather(
        *(services.publisher.publish_notification(n) for n in notifications), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return
    confirmed = len(results) - len(errors)
    uncertain = [e for e in errors if isinstance(e, PublishUncertain)]
    if uncertain or confirmed:
        raise PublishUncertain(f"{confirmed} of {len(results)} targets confirmed; {errors[0]}")
    raise errors[0]


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = services.metrics.render(
        breakers={name: b.state.value for name, b in services.breakers.items()},
        queue_depths=await request.app[QUEUE_DEPTHS].read(),
        store_up=services.store.available,
        broker_blocked=services.broker.connected and services.broker.blocked,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    from .openapi import build_openapi  # built on first use: start-up stays lean

    services = request.app[SERVICES]
    return web.json_response(build_openapi(auth=bool(services.settings.api_keys)))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    ready, detail = services.readiness()
    ready = ready and not request.app[STOPPING]["value"]
    return web.json_response(
        {"status": "ready" if ready else "not_ready", **detail}, status=200 if ready else 503
    )


def _base_app(services: Services, middleware: Middleware) -> web.Application:
    """Probes and metrics, and the services opened and closed with the application."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[middleware])
    app[SERVICES] = services
    app[STOPPING] = {"value": False}
    app[QUEUE_DEPTHS] = QueueDepths(services)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with services.opened():
            yield

    async def stop_accepting(app: web.Application) -> None:
        app[STOPPING]["value"] = True

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_accepting)
    return app


def make_app(services: Services) -> web.Application:
    """The gateway application; `services` are opened and closed with it."""
    settings = services.settings
    limits = None
    if settings.gateway_rate_limit > 0:
        limits = RateLimits(settings.gateway_rate_limit, settings.gateway_rate_burst)
    middleware = make_middleware(
        services.metrics, keys=settings.api_keys, guarded=("/notify", "/notifications"), limits=limits
    )
    app = _base_app(services, middleware)
    app.router.add_post("/notify", post_notify, expect_handler=expect_continue)
    app.router.add_get("/notify/{id}", get_notify)
    app.router.add_get("/notifications", get_notifications)
    app[WEBHOOK_PROVIDERS] = WebhookProviders(services)
    app.router.add_route("GET", "/webhooks/{channel}", webhook)
    app.router.add_route("POST", "/webhooks/{channel}", webhook)

    async def close_webhook_providers(app: web.Application) -> None:
        await app[WEBHOOK_PROVIDERS].close()

    app.on_cleanup.append(close_webhook_providers)
    app.router.add_get("/openapi.json", openapi)
    if settings.admin_keys:  # the operator console; without GATEWAY_ADMIN_KEYS /admin is a 404
        from .console import make_console  # Jinja2 and the templates only where it is on

        app.add_subapp("/admin", make_console(services))
    return app


def make_probe_app(services: Services) -> web.Application:
    """What a worker-only process serves on WA_METRICS_PORT: /healthz, /readyz, /metrics."""
    return _base_app(services, make_middleware(services.metrics))
