"""Shared plumbing for providers that speak HTTP: one reused session, timeouts, and
transport failures turned into TransientError, so each plugin only maps its own
answers and error codes.
"""

from __future__ import annotations

import email.utils
import functools
import json
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp

from .provider import (
    PermanentError,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    ProviderError,
    TransientError,
)
from .redaction import redact

_SNIPPET_LENGTH = 200
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class HttpAnswer:
    """A provider's HTTP answer, read in full while the connection was open."""

    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (an HTML error page …)."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or {} when it is anything else, so callers can `.get`."""
        body = self.json()
        return body if isinstance(body, dict) else {}

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))

    @property
    def snippet(self) -> str:
        """The start of the body on one line, to show an unexpected answer (an HTML page …)."""
        text = _WHITESPACE.sub(" ", self.text).strip()
        return text if len(text) <= _SNIPPET_LENGTH else text[:_SNIPPET_LENGTH] + "…"


def is_transient_status(status: int) -> bool:
    """HTTP statuses that mean "try later" when the provider's own code says nothing."""
    return status in (408, 425, 429) or status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Progress:
    """How far one request got: `sent` once it started going out."""

    sent = False


_PROGRESS: ContextVar[_Progress | None] = ContextVar("wa_gateway_http_progress", default=None)
"""The progress of the request the current task is making (`HttpProvider.request`)."""


class _TrackedRequest(aiohttp.ClientRequest):
    """aiohttp's request, marking its `_Progress` sent as it starts writing, at the point
    where aiohttp's tracing reports the headers sent (nothing is awaited in between).

    Tracing (`on_request_headers_sent`) told the same, but a session with any trace
    config runs every tracing hook of every request: about 30 µs a request, 7 % of the
    worker's CPU per message over HTTP."""

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        progress = _PROGRESS.get()
        if progress is not None:
            progress.sent = True
        return await super().send(conn)


class HttpProvider(Provider):
    """A Provider with one aiohttp ClientSession, created on first use and reused.

    A subclass declares its error codes in `transient_codes` / `permanent_codes` and
    raises `self.failure(answer, message, code=…)`; codes in neither set follow
    `unknown_codes_transient`, and by default the HTTP status (429 and 5xx retry).
    """

    user_agent = "wa-gateway"
    default_api_url: str | None = None
    """The provider's real base URL; WA_API_URL (config.api_url) replaces it."""
    transient_codes: ClassVar[frozenset[str]] = frozenset()
    """Provider error codes that mean "try later": rate limits, temporary outages."""
    permanent_codes: ClassVar[frozenset[str]] = frozenset()
    """Provider error codes that mean "never retry": bad credentials, bad recipient …"""
    unknown_codes_transient: ClassVar[bool | None] = None
    """How to treat a code in neither set; None decides by the HTTP status."""

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=self.config.total_timeout, sock_connect=self.config.connect_timeout
            )
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                headers={"User-Agent": self.user_agent},
                request_class=_TrackedRequest,
                # UTF-8 JSON, not \u escapes: the text reaches the provider byte for byte.
                json_serialize=functools.partial(json.dumps, ensure_ascii=False),
            )
        return self._session

    @property
    def base_url(self) -> str:
        """WA_API_URL (or the sender's own variable) when set, else the real API."""
        url = self.config.api_url or self.default_api_url
        if not url:
            raise ProviderConfigError(
                f"{self.config.api_url_variable} is not set; the {self.name} provider needs it"
            )
        return url.rstrip("/")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in an error message; extend it for other keys."""
        return (self.config.api_key,) if self.config.api_key else ()

    def redact(self, text: str) -> str:
        """`text` with each of `self.secrets` masked where it stands as a whole value
        (only values long enough to be secrets; see wa_gateway.redaction)."""
        return redact(text, self.secrets)

    def failure(
        self,
        answer: HttpAnswer,
        message: str | None = None,
        *,
        code: str | int | None = None,
        transient: bool | None = None,
        retry_after: float | None = None,
        ambiguous: bool | None = None,
    ) -> ProviderError:
        """The error to raise for a failed answer, keeping the provider's status, code and words.

        Classified by `code` (see the class docstring) unless `transient` says otherwise;
        `retry_after` defaults to the Retry-After header. Secrets are redacted.

        A transient 2xx without a code is `ambiguous` unless told otherwise: the request
        reached something that said "OK" without the provider's answer (no message id),
        so the provider may have accepted the message, and the worker calls it only
        once per attempt.
        """
        code = None if code is None or str(code).strip() == "" else str(code).strip()
        if transient is None:
            transient = self.is_transient(code, answer.status)
        if ambiguous is None:
            ambiguous = bool(transient) and answer.ok and code is None
        if not message:
            message = f"unexpected HTTP {answer.status} answer: {answer.snippet}"
            if ambiguous:
                message = (
                    f"unexpected HTTP {answer.status} answer, the provider may have accepted"
                    f" the message: {answer.snippet}"
                )
        elif ambiguous:
            message = f"{message} (the provider may have accepted the message)"
        text = self.redact(str(message))
        if transient:
            return TransientError(
                text,
                provider_status=answer.status,
                provider_code=code,
                retry_after=answer.retry_after if retry_after is None else retry_after,
                ambiguous=ambiguous,
            )
        return PermanentError(text, provider_status=answer.status, provider_code=code)

    def is_transient(self, code: str | None, status: int) -> bool:
        if code in self.transient_codes:
            return True
        if code in self.permanent_codes:
            return False
        if code is not None and self.unknown_codes_transient is not None:
            return self.unknown_codes_transient
        # A 2xx that failed without a code was not the provider's answer (a proxy page, a
        # wrong WA_API_URL …): retry it like an outage rather than drop the message.
        return 200 <= status < 300 or is_transient_status(status)

    async def request(self, method: str, url: str, **kwargs: Any) -> HttpAnswer:
        """Send one request; a network error or timeout becomes a TransientError.

        A timeout after the request went out is `ambiguous`: the provider may have
        accepted the message and be slow to say so. A timeout before (connecting) is not.
        """
        progress = _Progress()
        token = _PROGRESS.set(progress)
        try:
            async with self.session.request(method, url, **kwargs) as response:
                text = await response.text(encoding="utf-8", errors="replace")
                return HttpAnswer(response.status, dict(response.headers), text)
        except TimeoutError as exc:
            if progress.sent:
                raise TransientError(
                    f"{self.name}: no answer within the timeout"
                    " (the provider may have accepted the message)",
                    ambiguous=True,
                ) from exc
            raise TransientError(f"{self.name}: could not send within the timeout") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(self.redact(f"{self.name}: {type(exc).__name__}: {exc}")) from exc
        finally:
            _PROGRESS.reset(token)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
