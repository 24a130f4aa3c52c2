"""The Watzap.id provider: keys travel in the JSON body, and the body decides success.

Watzap answers HTTP 200 for most failures, so a send succeeds only when the body's
`status` is "200"; other codes are classified by errors.py, and any answer that is
not a 2xx JSON object is transient (a proxy, an outage, a wrong WA_API_URL).
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


class WatzapProvider(HttpProvider):
    name = "watzap"
    capabilities = Capabilities(groups=True, max_text_length=4096, send_rate=1.0)
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
        target = message.target
        if target.kind == "group":
            endpoint, recipient = "send_message_group", {"group_id": target.address}
        else:
            endpoint, recipient = "send_message", {"phone_no": target.digits}
        payload: dict[str, Any] = {
            "api_key": self.api_key,
            "number_key": self.number_key,
            **recipient,
            "message": message.text,
        }
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
