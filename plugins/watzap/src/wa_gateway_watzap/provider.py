"""The Watzap.id provider: keys travel in the JSON body, and the body decides success.

Watzap answers HTTP 200 for most failures, so a send succeeds only when the body's
`status` is "200"; other codes are classified by errors.py, and any answer that is
not a 2xx JSON object is transient (a proxy, an outage, a wrong WA_API_URL).

Media by URL, to a number or a group: an image with its caption (`send_image_url`,
`send_image_group`), a file without text (`send_file_url`, `send_file_group`). Watzap
pairs an ordinary WhatsApp number: there is no 24-hour window and no template.
"""

from __future__ import annotations

from typing import Any

from wa_gateway import (
    Capabilities,
    HttpAnswer,
    HttpProvider,
    Notification,
    ProviderConfig,
    Receipt,
)

from . import errors

TEXT_LIMIT = 4096
"""Watzap documents no limit for a text or a caption; this is the gateway's longest."""

ENDPOINTS = {
    (None, "phone"): "send_message",
    (None, "group"): "send_message_group",
    ("image", "phone"): "send_image_url",
    ("image", "group"): "send_image_group",
    ("document", "phone"): "send_file_url",
    ("document", "group"): "send_file_group",
}
"""By media kind and target kind (Watzap's API docs, api-docs.watzap.id)."""


class WatzapProvider(HttpProvider):
    name = "watzap"
    # A file goes without text: send_file_url / send_file_group take only the url.
    capabilities = Capabilities(
        groups=True,
        max_text_length=TEXT_LIMIT,
        send_rate=1.0,
        media={"image": TEXT_LIMIT, "document": 0},
    )
    default_api_url = "https://api.watzap.id/v1"
    permanent_codes = errors.PERMANENT_CODES
    unknown_codes_transient = True  # 1006 "Other Error" and codes nobody documented

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self.api_key = config.require_api_key()
        self.number_key = config.require("WATZAP_NUMBER_KEY")

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key, self.number_key)

    async def send(self, message: Notification) -> Receipt:
        target, media = message.target, message.media
        if target.kind == "group":
            recipient = {"group_id": target.address}
        else:
            recipient = {"phone_no": target.digits}
        endpoint = ENDPOINTS[(media.kind if media is not None else None, target.kind)]
        payload: dict[str, Any] = {"api_key": self.api_key, "number_key": self.number_key, **recipient}
        if media is None:
            payload["message"] = message.text
        elif media.kind == "image":
            # "message" is the caption, "" for none (as Watzap's clients send it);
            # separate_caption "0": the caption under the picture, not a second message.
            payload.update(url=media.url, message=message.caption, separate_caption="0")
        else:
            payload["url"] = media.url
        answer = await self.request("POST", f"{self.base_url}/{endpoint}", json=payload)
        return self.receipt(answer)

    def receipt(self, answer: HttpAnswer) -> Receipt:
        """A Receipt for a "200" body, else the error Watzap's status code calls for."""
        body = answer.json_object()
        if not answer.ok or "status" not in body:
            raise self.failure(answer, transient=True)
        code = str(body["status"]).strip()
        if code == errors.SUCCESS:
            # Watzap gives no message id; `ack` ("successfully") is all there is.
            return Receipt(provider=self.name, provider_status=_text(body.get("ack")))
        words = _text(body.get("message")) or _text(body.get("ack")) or "no message"
        raise self.failure(answer, words, code=code, retry_after=errors.RETRY_AFTER.get(code))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
