"""The provider contract: what a plugin implements and what the worker relies on.

A provider turns one queued notification into one call to a WhatsApp API. It does
not retry, sleep or dead-letter: it says what happened (a receipt, a transient
error or a permanent one) and the worker decides what to do next. This split keeps
every plugin small and makes retry policy one piece of code for all providers.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .models import Notification


@dataclass(frozen=True)
class Capabilities:
    """What a provider can serve: the one check of it. The gateway refuses (422) what
    it cannot, and the worker dead-letters a message queued under another configuration
    without calling `send`."""

    groups: bool
    max_text_length: int
    send_rate: float
    """Messages per second the provider tolerates without throttling or bans."""
    phone_numbers: bool = True
    media: Mapping[str, int] = field(default_factory=dict)
    """The media kinds it sends (`image`, `document`), each with the longest text that
    can go with it (its caption); 0: the kind goes without text."""

    def refusal(self, target_kind: str, text: str, media_kind: str | None = None) -> str | None:
        """Why a provider with these capabilities cannot send this, or None if it can.
        With `media_kind`, `text` is what goes with the media (its caption)."""
        if target_kind == "group" and not self.groups:
            return "cannot send to WhatsApp groups"
        if target_kind == "phone" and not self.phone_numbers:
            return "cannot send to phone numbers"
        if media_kind is not None:
            if media_kind not in self.media:
                kinds = ", ".join(sorted(self.media)) or "none"
                return f"cannot send a {media_kind} (media it sends: {kinds})"
            limit = self.media[media_kind]
            if text and limit == 0:
                return f"sends a {media_kind} without text (no caption)"
            if len(text) > limit:
                return f"the caption has {len(text)} characters; with a {media_kind} it accepts at most {limit}"
            return None
        if len(text) > self.max_text_length:
            return f"the text has {len(text)} characters; it accepts at most {self.max_text_length}"
        return None


@dataclass(frozen=True)
class Receipt:
    """Proof that the provider accepted a message."""

    provider: str
    provider_message_id: str | None = None
    provider_status: str | None = None


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider needs to start, already read from the environment / .env.

    `settings` holds every variable (environment over .env), so a plugin reads its own
    (`WATZAP_NUMBER_KEY`, `TWILIO_FROM` …) without the core knowing them.
    """

    api_key: str | None = None
    api_url: str | None = None
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    settings: Mapping[str, str] = field(default_factory=dict)
    api_key_variable: str = "WA_API_KEY"
    """The variable `api_key` came from (WA_FALLBACK_API_KEY for the fallback provider)."""
    api_url_variable: str = "WA_API_URL"
    """The variable `api_url` came from, named when a provider without a default needs it."""
    setting_prefix: str = ""
    """Prefix of this sender's own variables (`WA_CHANNEL_PEOPLE_` for channel `people`),
    named in errors so the operator sets the right one."""
    webhook_url: str | None = None
    """Where the provider reaches this channel's receipts webhook from the internet
    (GATEWAY_PUBLIC_URL + `/webhooks/<channel>`); None when GATEWAY_PUBLIC_URL is unset.
    A provider that asks for status callbacks per message (Twilio's StatusCallback)
    sends this; it is also the URL a signature over the URL is computed with."""

    def setting(self, name: str) -> str | None:
        """A provider-specific setting, or None when it is unset or empty."""
        return self.settings.get(name, "").strip() or None

    def require(self, name: str) -> str:
        """Return a provider-specific setting or stop start-up with one clear line."""
        value = self.settings.get(name, "").strip()
        if not value:
            raise ProviderConfigError(f"{self.setting_prefix}{name} is not set; the provider needs it")
        return value

    def require_api_key(self) -> str:
        if not self.api_key:
            raise ProviderConfigError(f"{self.api_key_variable} is not set; the provider needs it")
        return self.api_key


class ProviderConfigError(Exception):
    """The provider cannot start with this configuration (missing credential …)."""


class ProviderError(Exception):
    """A send failed. Keeps the provider's own words for the operator."""

    def __init__(
        self,
        message: str,
        *,
        provider_status: int | None = None,
        provider_code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider_message = message
        self.provider_status = provider_status
        self.provider_code = None if provider_code is None else str(provider_code)


class TransientError(ProviderError):
    """Try again later: the provider was down, slow, or asked us to slow down.

    `ambiguous=True` says the provider may have accepted the message all the same: a
    2xx answer that is not the provider's (no message id), or no answer after the
    request went out. Every retry of it may deliver one more copy, so the worker gives
    it no quick in-process retries: one call per attempt, through the retry tiers.
    """

    ambiguous: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider_status: int | None = None,
        provider_code: str | int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, provider_status=provider_status, provider_code=provider_code)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class PermanentError(ProviderError):
    """Never retry: the same request would fail the same way (bad number, bad key …)."""


RECEIPT_STATUSES = ("sent", "delivered", "read", "failed")
"""What a provider can report about a message it accepted."""


@dataclass(frozen=True)
class ProviderReceipt:
    """One status report from the provider about a message it accepted earlier."""

    provider_message_id: str
    """The id the provider gave in the send's Receipt (Meta's wamid, Twilio's SM… sid)."""
    status: str
    """One of RECEIPT_STATUSES."""
    at: datetime | None = None
    """When the provider says it happened (aware, UTC); None: when it arrived."""
    code: str | None = None
    """The provider's error code for a `failed` (Meta 131047, Twilio 63016 …)."""
    message: str | None = None
    """The provider's words for that error."""


@dataclass(frozen=True)
class LateFailure:
    """A message the provider accepted and later reported undeliverable (a `failed`
    receipt), as the ledger recorded it: what the `message_failed` hook observes.
    No phone number and no message text: safe to send to an error tracker."""

    notification_id: str
    channel: str
    provider: str
    provider_message_id: str
    code: str | None
    """The provider's code (Meta 131047, Twilio 63016 …)."""
    message: str | None


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request to `/webhooks/<channel>`, as the provider sent it."""

    method: str
    url: str
    """The URL the provider called: GATEWAY_PUBLIC_URL + the path and query when set
    (what a signature over the URL covers behind a proxy), else the request's own."""
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    """The raw body, at most 64 KiB: signatures are computed over these bytes."""

    def header(self, name: str) -> str | None:
        """The one value of header `name`, whatever its case; None when it is missing or
        repeated (a repeated signature is nobody's signature)."""
        wanted = name.lower()
        values = [
            value for key, value in self.headers.items()
            if isinstance(key, str) and key.lower() == wanted and isinstance(value, str)
        ]
        return values[0] if len(values) == 1 else None


@dataclass(frozen=True)
class WebhookReply:
    """What to answer the provider, and the receipts the request carried.

    The gateway records `receipts` (durably, before answering) and answers `status`
    with `text` (Meta's verification handshake echoes a challenge)."""

    receipts: tuple[ProviderReceipt, ...] = ()
    status: int = 200
    text: str = ""
    content_type: str = "text/plain"


class WebhookRejected(Exception):
    """The request is not the provider's (401: bad or missing signature, wrong verify
    token) or not readable (400); the gateway answers `status` with `detail` and records
    nothing."""

    def __init__(self, status: int, detail: str) -> None:
        if status not in (400, 401, 403, 404, 405, 415):
            raise ValueError(f"a webhook is rejected with 400, 401, 403, 404, 405 or 415, not {status}")
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Provider(abc.ABC):
    """Base class of every provider. Subclasses set `name` and `capabilities`.

    The class itself is the factory passed to `register(name, factory)`: it is called
    with a `ProviderConfig` once per process, and `close()` is awaited on shutdown.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    window_codes: ClassVar[frozenset[str]] = frozenset()
    """The provider's codes for "outside the 24-hour window: free-form text refused, send a
    template" (Meta 131047, Twilio 63016), in a send's error or in a later receipt. The
    worker then sends the event's template for this provider, once."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @classmethod
    def template_refusal(cls, spec: Mapping[str, Any]) -> str | None:
        """Why `spec`, an event's `template_<name>` table (before rendering), cannot be
        sent by this provider, or None. Checked when the events file loads."""
        return f"provider {cls.name!r} sends no templates"

    @abc.abstractmethod
    async def send(self, message: Notification) -> Receipt:
        """Deliver one message, or raise TransientError / PermanentError.

        Called only with messages `capabilities` allow: no need to check them again.
        """

    @property
    def accepts_webhooks(self) -> bool:
        """True when this channel's settings let `handle_webhook` verify a request (its
        secret is set). False: `/webhooks/<channel>` answers 404."""
        return False

    def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Verify a request to `/webhooks/<channel>` and read the receipts in it.

        Raise WebhookRejected for a bad signature (401) or an unreadable body (400);
        never anything else for what the internet sends. Called only when
        `accepts_webhooks` is True, in the gateway process, without I/O: verify with the
        channel's secret, parse, return.
        """
        raise WebhookRejected(404, f"provider {self.name!r} takes no webhooks")

    async def close(self) -> None:  # noqa: B027 - optional: most providers hold nothing
        """Release connections; called once when the process stops."""
