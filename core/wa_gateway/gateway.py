"""The HTTP gateway: validate, publish with a confirm, answer 202. Never calls WhatsApp.

`make_app(services)` builds the aiohttp application; the long-lived resources (AMQP
connection, store) belong to `Services` and are opened and closed in one cleanup
context, so `run` can share them between the gateway and the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from .broker import BrokerUnavailable, PublishUncertain
from .events import EventError
from .idempotency import IdempotentRequest, KeyReused, StillPending, valid_key
from .logs import bind_notification
from .models import DeliveryStatus, Notification, NotifyRequest, Queued, Target
from .pacing import RateLimiter
from .services import Services
from .store import StoreUnavailable
from .targets import InvalidTarget, resolve_target

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0
TOO_LARGE = f"the body is larger than {MAX_BODY} bytes"
SERVER_OPTIONS = {"auto_decompress": False}
"""aiohttp server options the gateway needs: it inflates bodies itself (see _inflate)."""
RETRY_AFTER_SECONDS = "5"

SERVICES = web.AppKey("services", Services)
STOPPING = web.AppKey("stopping", dict)
API_KEY = web.RequestKey("api_key", str)
RATE_LIMITS = web.AppKey("rate_limits", object)
QUEUE_DEPTHS = web.AppKey("queue_depths", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: HTTP status, stable code, one sentence for the caller."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    408: "body_timeout",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    429: "rate_limited",
    415: "unsupported_media_type",
}


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """wa_http_requests by route pattern (never the raw path: ids would explode the labels)."""
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[SERVICES].metrics.requests.labels(request.method, route, str(response.status)).inc()
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON {"error", "detail"}; tracebacks stay in the log."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)
    except StoreUnavailable as exc:
        return error_response(503, "unavailable", f"{exc}; try again", {"Retry-After": RETRY_AFTER_SECONDS})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        if exc.status == 413:
            detail = TOO_LARGE
        else:
            detail = exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, detail, headers)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal", "unexpected error; it has been logged")


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str, keys: list[str]) -> bool:
    """Compare against every key in constant time, so timing reveals neither key nor index."""
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way
    candidate = token.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode("utf-8", "surrogateescape"))
    return matched


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GATEWAY_API_KEYS guards /notify; probes and metrics stay open."""
    keys = request.app[SERVICES].settings.api_keys
    if keys and request.path.startswith("/notify"):
        token = _bearer_token(request)
        if token is None or not key_matches(token, keys):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <key>)",
                {"WWW-Authenticate": 'Bearer realm="wa-gateway"'},
            )
        request[API_KEY] = token
    return await handler(request)


class RateLimits:
    """One token bucket per API key: a runaway client gets 429s, the others keep their
    share. Per process; buckets of idle keys are dropped. Without GATEWAY_API_KEYS
    (loopback only) there is no key to limit: behind a proxy every client would share
    one address."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: OrderedDict[str, RateLimiter] = OrderedDict()

    def wait(self, client: str) -> float:
        """0 when the request may go ahead, else seconds until it may."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = RateLimiter(self.rate, burst=self.burst)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(client)
        return bucket.try_take()


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits = request.app[RATE_LIMITS]
    api_key = request.get(API_KEY)
    if limits is not None and api_key is not None and request.method == "POST":
        wait = limits.wait(api_key)
        if wait > 0:
            raise ApiError(
                429, "rate_limited", "too many requests for this API key; slow down",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
    return await handler(request)


async def read_json_object(request: web.Request) -> dict:
    """The body as a JSON object, or the right 4xx: 415, 413, 400 or 422."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "the body must be UTF-8")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported")
    if _announces_too_much(request):
        raise ApiError(413, "body_too_large", TOO_LARGE)
    raw = await _read_body(request)
    if encoding != "identity":
        raw = _inflate(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid UTF-8 (byte {exc.start})") from None
    return parse_json_object(text)


def _announces_too_much(request: web.Request) -> bool:
    """Content-Length over MAX_BODY: refuse before reading (or inviting) the body."""
    return request.content_length is not None and request.content_length > MAX_BODY


async def _read_body(request: web.Request) -> bytes:
    """The raw body, read within BODY_TIMEOUT: a client that announces a body and never
    sends it must not hold a handler for ever."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    except RequestPayloadError as exc:
        raise ApiError(400, "invalid_body", f"the body could not be read ({exc})") from None


def _inflate(raw: bytes) -> bytes:
    """gzip / zlib-deflate bodies, decompressed here (not by aiohttp) so that a bomb stops
    at MAX_BODY and a corrupt body is a 400, not a 500."""
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        body = decompressor.decompress(raw, MAX_BODY + 1)
    except zlib.error as exc:
        raise ApiError(400, "invalid_body", f"the body is not what its Content-Encoding says ({exc})") from None
    if len(body) > MAX_BODY or decompressor.unconsumed_tail:
        raise ApiError(413, "body_too_large", f"the decompressed body is larger than {MAX_BODY} bytes")
    if not decompressor.eof:
        raise ApiError(400, "invalid_body", "the compressed body is truncated")
    return body


def parse_json_object(text: str) -> dict:
    """Strict JSON: no NaN/Infinity, no number beyond a double, no duplicate keys (a
    proxy that reads the first and we the last would disagree), no lone surrogates."""
    try:
        body = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except _OutOfRange as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if "\\u" in text:  # only \u escapes can smuggle in a lone surrogate
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json", "the body contains a lone surrogate, which is not Unicode") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_field", "the body must be a JSON object")
    return body


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class _OutOfRange(ValueError):
    """Valid JSON, but a number no double can hold: a wrong value (422), not bad syntax."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _OutOfRange(f"the number {literal[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {duplicate!r} appears twice")
    return body


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect:` as the rest of the API does: in JSON, and 413 before the body
    is sent (aiohttp's default handler runs before the middlewares, in plain text)."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, "expectation_failed", "only 'Expect: 100-continue' is supported")
    if _announces_too_much(request):
        return error_response(413, "body_too_large", TOO_LARGE)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response
    return None


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def check_capabilities(services: Services, target: Target, text: str) -> None:
    """Refuse what the configured provider cannot deliver, rather than queue a dead message."""
    capabilities = services.capabilities
    refusal = capabilities.refusal(target.kind, text)
    if refusal:
        field = "to" if capabilities.refusal(target.kind, "") else "text"  # the target, or its text
        raise ApiError(422, "invalid_field", f"{field}: provider {services.settings.wa_provider!r} {refusal}")


def _target(services: Services, to: str) -> Target:
    settings = services.settings
    try:
        return resolve_target(
            to,
            settings.group_aliases,
            allow_raw=settings.wa_allow_raw_targets,
            default_country=settings.wa_default_country,
        )
    except InvalidTarget as exc:
        raise ApiError(422, "invalid_field", f"to: {exc}") from None


def build_notifications(services: Services, request: NotifyRequest) -> list[Notification]:
    """One notification per target: `to` + `text`, or an event rendered for each alias."""
    if request.event is not None:
        try:
            event = services.events.get(request.event)
            text = event.render(request.data or {})
        except EventError as exc:
            raise ApiError(422, "invalid_field", str(exc)) from None
        pairs = [(alias, _target(services, alias)) for alias in event.targets]
    else:
        assert request.to is not None and request.text is not None  # guaranteed by the model
        text = request.text
        pairs = [(request.to, _target(services, request.to))]
    notifications = []
    for to, target in pairs:
        check_capabilities(services, target, text)
        notifications.append(
            Notification(id=str(uuid.uuid4()), to=to, target=target, text=text, event=request.event)
        )
    return notifications


def _unavailable(detail: str) -> ApiError:
    return ApiError(503, "unavailable", detail, {"Retry-After": RETRY_AFTER_SECONDS})


async def post_notify(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if request.app[STOPPING]["value"]:
        raise _unavailable("the gateway is shutting down; try again")
    body = await read_json_object(request)
    try:
        notify = NotifyRequest.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_field", describe(exc)) from None
    notifications = build_notifications(services, notify)
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
        raise _unavailable("a request with this Idempotency-Key is still in progress") from None
    return web.json_response(claim.answer, status=202)


def _answer(notifications: list[Notification]) -> dict[str, Any]:
    ids = [n.id for n in notifications]
    bind_notification(ids[0] if len(ids) == 1 else ",".join(ids))
    return Queued(id=ids[0], ids=ids if len(ids) > 1 else None).model_dump(exclude_none=True)


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
        with services.metrics.publish_seconds.time():
            if len(notifications) == 1:  # the common case, without a task per publish
                await services.publisher.publish_notification(notifications[0])
            else:
                await _publish_all(services, notifications)
        log.debug("queued for %s", ", ".join(n.to for n in notifications))
    except PublishUncertain as exc:
        raise _unavailable(
            f"{exc}: the message may or may not be queued. Retry with the same Idempotency-Key "
            "to have it sent once (without a key, a retry may send it twice)"
        ) from None
    except BrokerUnavailable as exc:
        for notification_id in recorded:
            with contextlib.suppress(StoreUnavailable):
                await services.store.forget_status(notification_id)
        raise _unavailable(f"the message queue is unavailable ({exc}); nothing was queued, try again") from None


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


async def get_notify(request: web.Request) -> web.Response:
    notification_id = request.match_info["id"]
    status = await request.app[SERVICES].store.get_status(notification_id)  # 503 while the store is down
    if status is None:
        raise ApiError(404, "not_found", f"no notification with id {notification_id!r}")
    return web.json_response(json.loads(status.model_dump_json(exclude_none=True)))


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = services.metrics.render(
        breakers={name: b.state.value for name, b in services.breakers.items()},
        queue_depths=await request.app[QUEUE_DEPTHS].read(),
        store_up=services.store.available,
        broker_blocked=services.broker.connected and services.broker.blocked,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class QueueDepths:
    """Ready messages of the work and dead queues, read from RabbitMQ at most once a
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
            depths = await self.services.queue_depths((topology.work, topology.dead))
        except Exception:  # noqa: BLE001 - a scrape must answer even when the broker is in trouble
            return self._last
        self._last = {name: depth[0] for name, depth in depths.items() if depth is not None}
        return self._last


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


def _base_app(services: Services, middlewares: list) -> web.Application:  # type: ignore[type-arg]
    """Probes and metrics, and the services opened and closed with the application."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[count_requests, json_errors, *middlewares])
    app[SERVICES] = services
    app[STOPPING] = {"value": False}
    app[QUEUE_DEPTHS] = QueueDepths(services)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        async with services.opened():
            yield

    async def stop_accepting(app: web.Application) -> None:
        app[STOPPING]["value"] = True

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_accepting)
    return app


def make_app(services: Services) -> web.Application:
    """The gateway application; `services` are opened and closed with it."""
    app = _base_app(services, [bearer_auth, rate_limit])
    settings = services.settings
    app[RATE_LIMITS] = (
        RateLimits(settings.gateway_rate_limit, settings.gateway_rate_burst)
        if settings.gateway_rate_limit > 0 else None
    )
    app.router.add_post("/notify", post_notify, expect_handler=expect_continue)
    app.router.add_get("/notify/{id}", get_notify)
    app.router.add_get("/openapi.json", openapi)
    return app


def make_probe_app(services: Services) -> web.Application:
    """What a worker-only process serves on WA_METRICS_PORT: /healthz, /readyz, /metrics."""
    return _base_app(services, [])
