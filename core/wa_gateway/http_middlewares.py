"""What every request goes through: bearer keys, rate limits, errors as JSON, counting.

One middleware does it all (`make_middleware`), built by a factory that is handed what it
needs (the metrics, the keys, the limits), so it reads nothing from the application and a
test can build one with exactly what it wants.
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


def make_middleware(
    metrics: Metrics,
    *,
    keys: Sequence[str] = (),
    guarded: str | tuple[str, ...] = "/notify",
    limits: RateLimits | None = None,
) -> Middleware:
    """What every request goes through, in one middleware (one coroutine frame per request
    instead of four: the hot path is a few dozen microseconds, and each layer showed):

    1. the bearer keys (GATEWAY_API_KEYS) guard paths under `guarded`; probes and metrics
       stay open. Without keys nothing is guarded: the gateway then listens on loopback only;
    2. POSTs count against the key they were let in with (`limits`, GATEWAY_RATE_LIMIT);
    3. every error leaves as JSON {"error", "detail"}; tracebacks stay in the log;
    4. wa_http_requests counts the answer by route pattern (never the raw path: ids would
       explode the labels).
    """
    keys = list(keys)

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if keys and request.path.startswith(guarded):
                token = _authorized(request, keys)
                request[API_KEY] = token
                if limits is not None and request.method == "POST":
                    limits.check(token)
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - error_answer re-raises what is no error
            response = error_answer(request, exc)
        resource = request.match_info.route.resource
        metrics.count_request(request.method, resource.canonical if resource is not None else "unmatched",
                              response.status)
        return response

    return gateway_middleware


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an exception out of a handler; a non-error HTTPException (a
    redirect) is raised again for aiohttp to send."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.detail, exc.headers)
    if isinstance(exc, StoreUnavailable):
        return error_response(503, "unavailable", f"{exc}; try again", {"Retry-After": RETRY_AFTER_SECONDS})
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        detail = TOO_LARGE if exc.status == 413 else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, detail, headers)
    log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "unexpected error; it has been logged")


def _authorized(request: web.Request, keys: Sequence[str]) -> str:
    """The request's bearer token if it is one of `keys`, else a 401."""
    token = _bearer_token(request)
    if token is None or not key_matches(token, keys):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <key>)",
            {"WWW-Authenticate": 'Bearer realm="wa-gateway"'},
        )
    return token


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

    def check(self, client: str) -> None:
        """A 429 with Retry-After when `client` is over its limit."""
        wait = self.wait(client)
        if wait > 0:
            raise ApiError(
                429, "rate_limited", "too many requests for this API key; slow down",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
