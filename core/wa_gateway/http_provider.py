"""Shared plumbing for providers that speak HTTP: one reused client (http_client), its
timeouts, bodies encoded the way provider APIs want them, and transport failures turned
into TransientError, so each plugin only maps its own answers and error codes.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

from .http_client import HttpClient, HttpRequestError, HttpTimeout
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
    headers: Mapping[str, str]
    """Case-insensitive: `headers.get("retry-after")` finds `Retry-After`."""
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


class HttpProvider(Provider):
    """A Provider with one HttpClient, created on first use and reused.

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
        self._http: HttpClient | None = None

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                user_agent=self.user_agent,
                connect_timeout=self.config.connect_timeout,
                total_timeout=self.config.total_timeout,
            )
        return self._http

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

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one request; a network error or timeout becomes a TransientError.

        `json` is sent as UTF-8 JSON (not \\u escapes: the text arrives byte for byte),
        `data` as a form when it is a mapping (UTF-8, percent-encoded), else as it is;
        `params` goes into the query string.

        An error after the request went out (no answer within the timeout, the connection
        lost before the whole answer) is `ambiguous`: the provider may have accepted the
        message. One before it went out (refused, no route, TLS) is not.
        """
        head = dict(headers or {})
        body = b""
        if json is not None:
            body = _json_bytes(json)
            head.setdefault("Content-Type", "application/json")
        elif isinstance(data, Mapping):
            body = urlencode(data, doseq=True).encode("ascii")
            head.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif data is not None:
            body = data.encode() if isinstance(data, str) else data
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        try:
            response = await self.http.request(method, url, headers=head, body=body)
        except HttpTimeout as exc:
            if exc.sent:
                raise TransientError(
                    f"{self.name}: no answer within the timeout"
                    " (the provider may have accepted the message)",
                    ambiguous=True,
                ) from exc
            raise TransientError(f"{self.name}: could not send within the timeout") from exc
        except HttpRequestError as exc:
            text = self.redact(f"{self.name}: {exc}")
            if exc.sent:
                text += " (the provider may have accepted the message)"
            raise TransientError(text, ambiguous=exc.sent) from exc
        except ValueError as exc:  # a URL or header that HTTP cannot carry: configuration
            raise PermanentError(self.redact(f"{self.name}: cannot send: {exc}")) from exc
        text = response.body.decode("utf-8", errors="replace")
        return HttpAnswer(response.status, response.headers, text)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
