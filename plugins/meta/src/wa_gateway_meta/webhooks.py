"""Meta's `messages` webhook: the verification handshake and signed status reports.

- `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`: Meta checks the
  callback URL once, when it is saved in the App Dashboard. The challenge is echoed
  when the token is META_WEBHOOK_VERIFY_TOKEN (403 otherwise, and when none is set).
- `POST` with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed
  with META_APP_SECRET>`: checked on the raw bytes before anything is parsed (401 when
  missing or wrong). The body is `entry[].changes[].value.statuses[]`; each status with
  `status` sent/delivered/read/failed becomes a ProviderReceipt, others (`deleted`,
  `warning` …) are skipped, and changes of other fields or with incoming `messages`
  only carry none.

A signed body is Meta's, so its shape is held to Meta's documentation in two ways:
what identifies a receipt (the `entry`, `changes`, `value`, `statuses` containers and a
status's `id` and `status`) must be as documented or the request is a 400; what only
describes one (`timestamp`, `errors`) is dropped when unreadable, so one odd field
does not cost a batch of receipts. Every string kept is clean UTF-8 without control
characters, at most a few hundred characters: what a database stores as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from wa_gateway import ProviderReceipt, WebhookRejected, WebhookReply, WebhookRequest

SIGNATURE_HEADER = "X-Hub-Signature-256"
RECEIPT_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
"""Meta's statuses that are receipts; Meta's own names are the gateway's."""

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_WAMID = re.compile(r"[\x21-\x7e]{1,255}")
"""A wamid is base64-ish ASCII ('wamid.HBgL…='); anything else is no id of Meta's."""
_CHALLENGE = re.compile(r"[\x21-\x7e]{1,256}")
"""Meta's challenge is digits; anything visible and short is echoed, nothing else."""
_CODE = re.compile(r"[0-9A-Za-z_.-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_LIMIT = 500


class MetaWebhook:
    """Verifies and reads the requests Meta sends to one channel's webhook."""

    def __init__(self, app_secret: str, verify_token: str | None) -> None:
        self._key = app_secret.encode("utf-8")
        self._verify_token = verify_token

    def handle(self, request: WebhookRequest) -> WebhookReply:
        method = request.method.upper()
        if method == "GET":
            return self.verify_subscription(request.query)
        if method == "POST":
            self.check_signature(request)
            return WebhookReply(receipts=read_receipts(request.body), text="ok")
        raise WebhookRejected(405, f"{request.method} is not a method of Meta's webhook")

    def verify_subscription(self, query: Mapping[str, str]) -> WebhookReply:
        """Meta's handshake: echo `hub.challenge` when the verify token is ours."""
        mode = query.get("hub.mode")
        if mode != "subscribe":
            raise WebhookRejected(400, "expected hub.mode=subscribe (Meta's verification request)")
        token = query.get("hub.verify_token")
        if self._verify_token is None:
            raise WebhookRejected(
                403, "META_WEBHOOK_VERIFY_TOKEN is not set: this webhook cannot be verified"
            )
        if not isinstance(token, str) or not hmac.compare_digest(
            _utf8(token), _utf8(self._verify_token)
        ):
            raise WebhookRejected(403, "hub.verify_token is not META_WEBHOOK_VERIFY_TOKEN")
        challenge = query.get("hub.challenge")
        if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
            raise WebhookRejected(400, "hub.challenge is missing or not Meta's (digits)")
        return WebhookReply(text=challenge)

    def check_signature(self, request: WebhookRequest) -> None:
        """Raise 401 unless `X-Hub-Signature-256` is the HMAC of the body with our secret."""
        header = request.header(SIGNATURE_HEADER)
        body = request.body
        if header is None:
            raise WebhookRejected(401, f"one {SIGNATURE_HEADER} header is required")
        match = _SIGNATURE.fullmatch(header.strip())
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        if match is None or not hmac.compare_digest(expected, match.group(1).lower()):
            raise WebhookRejected(401, f"{SIGNATURE_HEADER} does not match the body")


def read_receipts(body: bytes) -> tuple[ProviderReceipt, ...]:
    """The receipts in a (verified) notification; WebhookRejected(400) when it is not one."""
    document = _json(body)
    if not isinstance(document, dict) or document.get("object") != "whatsapp_business_account":
        raise WebhookRejected(400, "not a WhatsApp Business Account notification")
    receipts: list[ProviderReceipt] = []
    for entry in _list(document.get("entry"), "entry"):
        for change in _list(_object(entry, "entry[]").get("changes"), "entry[].changes"):
            change = _object(change, "changes[]")
            if change.get("field") != "messages":
                continue  # account, template and quality updates: no receipts
            value = _object(change.get("value"), "changes[].value")
            if "statuses" not in value:
                continue  # incoming messages or system errors: no receipts
            for status in _list(value["statuses"], "value.statuses"):
                receipt = _receipt(_object(status, "statuses[]"))
                if receipt is not None:
                    receipts.append(receipt)
    return tuple(receipts)


def _receipt(status: dict[str, Any]) -> ProviderReceipt | None:
    state = status.get("status")
    if not isinstance(state, str):
        raise WebhookRejected(400, "statuses[].status is not a string")
    if state not in RECEIPT_STATUSES:
        return None  # 'deleted', 'warning' …: nothing the gateway records
    wamid = status.get("id")
    if not isinstance(wamid, str) or not _WAMID.fullmatch(wamid):
        raise WebhookRejected(400, "statuses[].id is not a message id")
    code, message = _error(status.get("errors")) if state == "failed" else (None, None)
    return ProviderReceipt(
        provider_message_id=wamid,
        status=state,
        at=_timestamp(status.get("timestamp")),
        code=code,
        message=message,
    )


def _error(errors: object) -> tuple[str | None, str | None]:
    """Code and words of a failed status's first error: `title` (or `message`), then
    `error_data.details`; what is unreadable is left out."""
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        return None, None
    code = first.get("code")
    code_text = str(code) if isinstance(code, int | str) and not isinstance(code, bool) else ""
    words = clean_text(first.get("title")) or clean_text(first.get("message"))
    data = first.get("error_data")
    details = clean_text(data.get("details")) if isinstance(data, dict) else None
    if details and (words is None or details not in words):
        words = f"{words}: {details}" if words else details
    return (code_text if _CODE.fullmatch(code_text) else None), (
        words[:_MESSAGE_LIMIT] if words else None
    )


def _timestamp(value: object) -> datetime | None:
    """Unix seconds (Meta sends a string of digits) as an aware UTC datetime."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def clean_text(value: object, limit: int = _MESSAGE_LIMIT) -> str | None:
    """`value` as storable text (lone surrogates replaced, control characters as spaces,
    at most `limit` characters), or None when it is no string or nothing is left."""
    if not isinstance(value, str):
        return None
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", text).strip()
    return text[:limit] or None


def _json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, digits over the limit
        raise WebhookRejected(400, "the body is not UTF-8 JSON") from error


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookRejected(400, f"{where} is not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise WebhookRejected(400, f"{where} is not a list")
    return value


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
