"""The Twilio provider: Programmable Messaging's `Messages.json` with `whatsapp:` addresses.

A form-encoded POST with HTTP Basic auth (account SID, auth token). Success is 201
with the message `sid`; errors are `{"code", "message", "more_info", "status"}`,
classified by `code` (errors.py). Twilio accepts a message before WhatsApp delivers
it: later failures (63016, 63024 …) reach only a StatusCallback, not this send. So
each send names the channel's webhook (GATEWAY_PUBLIC_URL + /webhooks/<channel>) as
its StatusCallback when there is one, and webhooks.py reads what Twilio posts there.

Besides text: `MediaUrl` (an image with its caption as `Body`; a document without
text, which WhatsApp through Twilio cannot carry), and, when the text is refused
outside the 24-hour window (63016), the event's approved Content Template:
`ContentSid` with `ContentVariables`, a JSON string.
"""

from __future__ import annotations

import base64
import json
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
from .webhooks import TwilioWebhook

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_CHANNEL = "whatsapp:"
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
"""ContentSid's pattern in Twilio's OpenAPI spec (twilio_api_v2010.json)."""
_TEMPLATE_KEYS = ("content_sid", "variables")
BODY_LIMIT = 1600
"""`Body`: "Can be up to 1,600 characters in length" (Twilio's OpenAPI spec), also as an
image's caption."""


class TwilioProvider(HttpProvider):
    name = "twilio"
    # WhatsApp has no group send through Twilio; 10 mps is a WhatsApp sender's default
    # text throughput on Twilio (50 on request).
    # A document goes without text: "Twilio does not support setting a filename or
    # caption for documents that are sent as media messages over WhatsApp" (Twilio,
    # "Guidance on WhatsApp Media Messages").
    capabilities = Capabilities(
        groups=False,
        max_text_length=BODY_LIMIT,
        send_rate=10.0,
        media={"image": BODY_LIMIT, "document": 0},
    )
    default_api_url = "https://api.twilio.com"
    transient_codes = errors.TRANSIENT_CODES
    permanent_codes = errors.PERMANENT_CODES
    window_codes = errors.WINDOW_CODES

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        auth_token = config.require_api_key()
        self.account_sid = config.require("TWILIO_ACCOUNT_SID")
        if not _ACCOUNT_SID.match(self.account_sid):
            raise ProviderConfigError(
                f"TWILIO_ACCOUNT_SID={self.account_sid!r} is not an account SID "
                "('AC' and 32 hex digits, from the Twilio console)"
            )
        sender = config.require("TWILIO_FROM").removeprefix(_CHANNEL)
        if not _E164.match(sender):
            raise ProviderConfigError(
                f"TWILIO_FROM={sender!r} is not a WhatsApp sender like 'whatsapp:+14155238886'"
            )
        self.sender = _CHANNEL + sender
        credentials = f"{self.account_sid}:{auth_token}".encode()
        self.authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        self.webhook = TwilioWebhook(auth_token)

    @property
    def accepts_webhooks(self) -> bool:
        """Always: the auth token every configured provider has signs the callbacks."""
        return True

    def handle_webhook(self, request: WebhookRequest) -> WebhookReply:
        return self.webhook.handle(request)

    @classmethod
    def template_refusal(cls, spec: Mapping[str, Any]) -> str | None:
        """`template_twilio = { content_sid = "HX…", variables = { "1" = "{{ id }}", … } }`:
        an approved Content Template and its variables {{1}}, {{2}} … in order, each a
        string the event's data renders."""
        unknown = sorted(set(spec) - set(_TEMPLATE_KEYS))
        if unknown:
            return (
                f"unknown keys {', '.join(unknown)}: a Twilio template has content_sid "
                "and variables"
            )
        sid = spec.get("content_sid")
        if not isinstance(sid, str) or not _CONTENT_SID.fullmatch(sid):
            return (
                f"content_sid {_short(sid)} is not a Content Template SID ('HX' and 32 hex "
                "digits, from Content Template Builder)"
            )
        variables = spec.get("variables", {})
        if not isinstance(variables, dict):
            return f"variables {_short(variables)} must be a table like {{ \"1\" = \"{{{{ id }}}}\" }}"
        keys = list(variables)
        expected = [str(n) for n in range(1, len(keys) + 1)]
        if keys != expected:
            return (
                f"variables are named {', '.join(map(repr, keys))}: they must be "
                f"{', '.join(map(repr, expected))}, in that order, as the template's "
                "{{1}}, {{2}} …"
            )
        wrong = next((key for key, value in variables.items() if not isinstance(value, str)), None)
        if wrong is not None:
            return f"variable {wrong!r} must be a string, e.g. \"{{{{ id }}}}\""
        return None

    async def send(self, message: Notification) -> Receipt:
        form = {"From": self.sender, "To": _CHANNEL + message.target.address, **self.content(message)}
        if self.config.webhook_url is not None:
            form["StatusCallback"] = self.config.webhook_url
        answer = await self.request(
            "POST",
            f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            data=form,
            headers={"Authorization": self.authorization},
        )
        return self.receipt(answer)

    def content(self, message: Notification) -> dict[str, str]:
        """The template, the media (with its caption), else the text."""
        if message.use_template:
            template = message.templates.get(self.name)
            if template is None:  # the worker asks only when the event has one
                raise PermanentError(f"event {message.event!r} has no template_twilio to send")
            form = {"ContentSid": str(template["content_sid"])}
            variables = template.get("variables") or {}
            if variables:
                # A JSON string, UTF-8 as it is: percent-encoded with the rest of the form.
                form["ContentVariables"] = json.dumps(
                    variables, ensure_ascii=False, separators=(",", ":")
                )
            return form
        if message.media is not None:
            form = {"MediaUrl": message.media.url}
            if message.caption:
                form["Body"] = message.caption
            return form
        return {"Body": message.text}

    def receipt(self, answer: HttpAnswer) -> Receipt:
        """A Receipt with the message sid, else the error Twilio's `code` calls for."""
        body = answer.json_object()
        if answer.ok and body.get("sid"):
            return Receipt(
                provider=self.name,
                provider_message_id=str(body["sid"]),
                provider_status=body.get("status"),
            )
        if answer.ok or "message" not in body:
            raise self.failure(answer)  # not a Twilio answer: classified by HTTP status
        words = str(body["message"])
        if body.get("more_info"):
            words = f"{words} ({body['more_info']})"
        raise self.failure(answer, words, code=body.get("code"))


def _short(value: object) -> str:
    """A value for a one-line error: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
