"""What every request goes through: counting, errors as JSON, bearer keys, rate limits.

Each middleware that needs something (the metrics, the keys, the limits) is built by a
factory that is handed it, so it reads nothing from the application and a test can build
one with exactly what it wants.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .api_errors import RETRY_AFTER_SECONDS, ApiError, error_response
from .http_body import TOO_LARGE
from .metrics import Metrics
from .pacing import RateLimiter
from .store import StoreUnavailable

log = logging.getLogger(__name__)

API_KEY = web.RequestKey("api_key", str)
"""The bearer key the request was let in with (absent without GATEWAY_API_KEYS)."""

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


def make_metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        """wa_http_requests by route pattern (never the raw path: ids would explode the labels)."""
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.requests.labels(request.method, route, str(response.status)).inc()
        return response

    return count_requests


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
        detail = TOO_LARGE if exc.status == 413 else exc.reason
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


def key_matches(token: str, keys: Sequence[str]) -> bool:
    """Compare against every key in constant time, so timing reveals neither key nor index."""
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way
    candidate = token.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode("utf-8", "surrogateescape"))
    return matched


def make_auth_middleware(keys: Sequence[str], guarded: str | tuple[str, ...] = "/notify") -> Middleware:
    """The keys (GATEWAY_API_KEYS) guard paths under `guarded`; probes and metrics stay
    open. Without keys nothing is guarded: the gateway then listens on loopback only."""
    keys = list(keys)

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and request.path.startswith(guarded):
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

    return bearer_auth


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


def make_rate_limit_middleware(limits: RateLimits) -> Middleware:
    """POSTs count against the key the auth middleware (placed before this one) let in."""

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        api_key = request.get(API_KEY)
        if api_key is not None and request.method == "POST":
            wait = limits.wait(api_key)
            if wait > 0:
                raise ApiError(
                    429, "rate_limited", "too many requests for this API key; slow down",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return rate_limit
