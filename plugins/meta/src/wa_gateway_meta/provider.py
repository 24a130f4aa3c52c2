"""The Meta WhatsApp Cloud API provider: Graph API `POST /{phone-number-id}/messages`.

Success is HTTP 2xx with `messages[0].id` (a `wamid.…`), kept as the receipt's id.
Errors are `{"error": {"code", "message", "error_data": {"details"}, "fbtrace_id"}}`,
classified by `code` (errors.py). A 5xx whose code is unknown is retried: Meta has
no idempotency key, so that can deliver twice, which for notifications beats losing
one; see "Double sends" in the README.

With META_APP_SECRET set, the channel's webhook takes Meta's status reports
(webhooks.py): delivered, read and the failures a send's 200 could not tell.

Besides text: an image or a document by `link` (with `caption`, a document's
`filename`), and, when the text is refused outside the 24-hour window (131047), the
event's approved template (`type: template`, its body parameters in order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wa_gateway import (
    Capabilities,
    HttpAnswer,
    HttpProvider,
    Notification,
    PermanentError,
    ProviderConfig,
    ProviderConfigError,
    Receipt,
    WebhookReply,
    WebhookRequest,
)

from . import errors
from .webhooks import MetaWebhook

DEFAULT_API_VERSION = "v23.0"
_API_VERSION = re.compile(r"^v\d+\.\d+$")
_PHONE_NUMBER_ID = re.compile(r"^\d+$")
_TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
"""Meta's rule for template names: lowercase letters, digits and underscores, at most
512 characters (Business Management API, "Message templates")."""
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")
"""A template language code as WhatsApp Manager lists them: `id`, `en_US`, `fil`, `pt_BR`."""
_TEMPLATE_KEYS = ("name", "language", "params")
CAPTION_LIMIT = 1024
"""`image.caption` and `document.caption`: "Maximum 1024 characters" (Meta, "Image
messages" and "Document messages")."""


class MetaProvider(HttpProvider):
    name = "meta"
    # Groups exist only as opaque Groups-API ids of groups the business created, never
    # the '<digits>@g.us' ids our aliases hold; so no group capability.
    capabilities = Capabilities(
        groups=False,
        max_text_length=4096,
        send_rate=80.0,
        media={"image": CAPTION_LIMIT, "document": CAPTION_LIMIT},
    )
    transient_codes = errors.TRANSIENT_CODES
    permanent_codes = errors.PERMANENT_CODES
    window_codes = errors.WINDOW_CODES

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.access_token = config.require_api_key()
        self.phone_number_id = config.require("META_PHONE_NUMBER_ID")
        if not _PHONE_NUMBER_ID.match(self.phone_number_id):
            raise ProviderConfigError(
                f"META_PHONE_NUMBER_ID={self.phone_number_id!r} is not a phone number ID "
                "(digits, from WhatsApp Manager > API Setup)"
            )
        version = config.settings.get("META_API_VERSION", "").strip() or DEFAULT_API_VERSION
        if not _API_VERSION.match(version):
            raise ProviderConfigError(f"META_API_VERSION={version!r} is not like 'v23.0'")
        self.default_api_url = f"https://graph.facebook.com/{version}"
        app_secret = config.setting("META_APP_SECRET")
        self.webhook = (
            MetaWebhook(app_secret, config.setting("META_WEBHOOK_VERIFY_TOKEN"))
            if app_secret
            else None
        )

    @property
    def accepts_webhooks(self) -> bool:
        """Only a channel with META_APP_SECRET can tell Meta's requests from others'."""
        return self.webhook is not None

    def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        if self.webhook is None:
            return super().handle_webhook(request)
        return self.webhook.handle(request)

    @property
    def secrets(self) -> tuple[str, ...]:
        extra = (
            self.config.setting(name) for name in ("META_APP_SECRET", "META_WEBHOOK_VERIFY_TOKEN")
        )
        return (*super().secrets, *(value for value in extra if value))

    @classmethod
    def template_refusal(cls, spec: Mapping[str, Any]) -> str | None:
        """`template_meta = { name = "…", language = "…", params = ["{{ id }}", …] }`:
        an approved template's name and language, and its body's parameters in order
        ({{1}}, {{2}} …), each a string the event's data renders."""
        unknown = sorted(set(spec) - set(_TEMPLATE_KEYS))
        if unknown:
            return f"unknown keys {', '.join(unknown)}: a Meta template has name, language and params"
        name = spec.get("name")
        if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
            return (
                f"name {_short(name)} is not a Meta template name (lowercase letters, digits "
                "and underscores, as in WhatsApp Manager > Message templates)"
            )
        language = spec.get("language")
        if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
            return (
                f"language {_short(language)} is not a template language code like "
                "'id' or 'en_US'"
            )
        params = spec.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return (
                f"params {_short(params)} must be a list of strings: the template body's "
                "{{1}}, {{2}} … in order, e.g. [\"{{ id }}\", \"{{ requester }}\"]"
            )
        return None

    async def send(self, message: Notification) -> Receipt:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            # With '+': without it Meta prepends the business number's country code,
            # which can misdeliver ("Sending messages" guide).
            "to": message.target.address,
            **self.content(message),
        }
        answer = await self.request(
            "POST",
            f"{self.base_url}/{self.phone_number_id}/messages",
            json=payload,
            headers={"Authorization": f"Bearer {self.access_token}"},
        )
        return self.receipt(answer)

    def content(self, message: Notification) -> dict[str, Any]:
        """`type` and its object: the template, the media, else the text."""
        if message.use_template:
            template = message.templates.get(self.name)
            if template is None:  # the worker asks only when the event has one
                raise PermanentError(f"event {message.event!r} has no template_meta to send")
            return {"type": "template", "template": _template(template)}
        media = message.media
        if media is not None:
            link: dict[str, Any] = {"link": media.url}
            if message.caption:
                link["caption"] = message.caption
            if media.kind == "document" and media.filename:
                link["filename"] = media.filename
            return {"type": media.kind, media.kind: link}
        return {"type": "text", "text": {"body": message.text}}

    def receipt(self, answer: HttpAnswer) -> Receipt:
        """A Receipt with the wamid, else the error Meta's `error.code` calls for."""
        body = answer.json_object()
        if answer.ok:
            accepted = _first_message(body)
            if accepted.get("id"):
                return Receipt(
                    provider=self.name,
                    provider_message_id=str(accepted["id"]),
                    provider_status=accepted.get("message_status"),
                )
        error = body.get("error")
        if not isinstance(error, dict):
            raise self.failure(answer)  # not a Graph API answer: classified by HTTP status
        raise self.failure(answer, _describe(error), code=error.get("code"))


def _template(template: Mapping[str, Any]) -> dict[str, Any]:
    """The Cloud API's `template` object: name, language, and the body's parameters as
    text, in order (no `components` for a template without parameters)."""
    sent: dict[str, Any] = {"name": template["name"], "language": {"code": template["language"]}}
    params = template.get("params") or []
    if params:
        parameters = [{"type": "text", "text": str(param)} for param in params]
        sent["components"] = [{"type": "body", "parameters": parameters}]
    return sent


def _short(value: object) -> str:
    """A value for a one-line error: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_message(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    return first if isinstance(first, dict) else {}


def _describe(error: dict[str, Any]) -> str:
    """Meta's message, its details (what to fix) and the fbtrace_id support asks for."""
    text = str(error.get("message") or "no message")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if details and str(details) not in text:
        text = f"{text}: {details}"
    if error.get("fbtrace_id"):
        text = f"{text} (fbtrace_id {error['fbtrace_id']})"
    return text
