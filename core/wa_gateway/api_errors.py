"""The one shape every error answer has: `{"error": <stable code>, "detail": <one sentence>}`.

Handlers and the body reader raise `ApiError`; the `json_errors` middleware and the
`Expect:` handler turn it into a response with `error_response`.
"""

from __future__ import annotations

from aiohttp import web

RETRY_AFTER_SECONDS = "5"


class ApiError(Exception):
    """An error answer: HTTP status, stable code, one sentence for the caller."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def unavailable(detail: str) -> ApiError:
    """503: nothing was done and a retry may succeed, so say when to retry."""
    return ApiError(503, "unavailable", detail, {"Retry-After": RETRY_AFTER_SECONDS})


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)
