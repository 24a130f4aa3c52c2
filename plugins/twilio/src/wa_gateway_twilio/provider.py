"""The Twilio provider: Programmable Messaging's `Messages.json` with `whatsapp:` addresses.

A form-encoded POST with HTTP Basic auth (account SID, auth token). Success is 201
with the message `sid`; errors are `{"code", "message", "more_info", "status"}`,
classified by `code` (errors.py). Twilio accepts a message before WhatsApp delivers
it: later failures (63016, 63024 …) reach only a StatusCallback, not this send. So
each send names the channel's webhook (GATEWAY_PUBLIC_URL + /webhooks/<channel>) as
its StatusCallback when there is one, and webhooks.py reads what Twilio posts there.
"""

from __future__ import annotations

import base64
import re

from wa_gateway import (
    Capabilities,
    HttpAnswer,
    HttpProvider,
    Notification,
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


class TwilioProvider(HttpProvider):
    name = "twilio"
    # WhatsApp has no group send through Twilio; 10 mps is a WhatsApp sender's default
    # text throughput on Twilio (50 on request).
    capabilities = Capabilities(groups=False, max_text_length=1600, send_rate=10.0)
    default_api_url = "https://api.twilio.com"
    transient_codes = errors.TRANSIENT_CODES
    permanent_codes = errors.PERMANENT_CODES

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

    async def send(self, message: Notification) -> Receipt:
        form = {"From": self.sender, "To": _CHANNEL + message.target.address, "Body": message.text}
        if self.config.webhook_url is not None:
            form["StatusCallback"] = self.config.webhook_url
        answer = await self.request(
            "POST",
            f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            data=form,
            headers={"Authorization": self.authorization},
        )
        return self.receipt(answer)

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
