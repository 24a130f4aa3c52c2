"""Twilio's message status callbacks: the `StatusCallback` each send names.

Twilio POSTs `application/x-www-form-urlencoded` (`MessageSid`, `MessageStatus`,
`ErrorCode`, `ErrorMessage` …) signed in `X-Twilio-Signature`: base64 of HMAC-SHA1,
keyed with the auth token, of the URL Twilio called followed by every POST parameter,
sorted by name, as name + value without separators. As in Twilio's own
`RequestValidator`, a name's several values are sorted and taken once each, and the
URL is also tried with its default port added and with its port removed (Twilio signs
one or the other). Missing or wrong: 401.

`MessageStatus` sent, delivered, read and failed are receipts, `undelivered` is a
`failed` one; queued, accepting, sending, scheduled, canceled … are not (the gateway
already knows the message was accepted), so they are answered 200 with none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, urlsplit

from wa_gateway import ProviderReceipt, WebhookRejected, WebhookReply, WebhookRequest

SIGNATURE_HEADER = "X-Twilio-Signature"
FORM = "application/x-www-form-urlencoded"
STATUSES = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
}
"""Twilio's MessageStatus values that are receipts, and the gateway's name for each."""

_MESSAGE_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
"""SM… (or MM…) and 32 hex digits."""
_CODE = re.compile(r"[0-9A-Za-z_.-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_LIMIT = 500
_DEFAULT_PORTS = {"https": 443, "http": 80}


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """`X-Twilio-Signature` of a request to `url` with the POST parameters `params`."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(
        auth_token.encode("utf-8", "surrogatepass"),
        signed.encode("utf-8", "surrogatepass"),
        hashlib.sha1,
    ).digest()
    return base64.b64encode(digest).decode("ascii")


class TwilioWebhook:
    """Verifies and reads the status callbacks Twilio sends to one channel's webhook."""

    def __init__(self, auth_token: str) -> None:
        self._auth_token = auth_token

    def handle(self, request: WebhookRequest) -> WebhookReply:
        if request.method.upper() != "POST":
            raise WebhookRejected(405, "Twilio's status callbacks are POST requests")
        content_type = request.header("Content-Type") or ""
        if content_type.split(";")[0].strip().lower() != FORM:
            raise WebhookRejected(415, f"expected {FORM}, Twilio's status callback")
        given = request.header(SIGNATURE_HEADER)
        if given is None:
            raise WebhookRejected(401, f"one {SIGNATURE_HEADER} header is required")
        params = _form(request.body)
        if not self.signed(request.url, params, given.strip()):
            raise WebhookRejected(401, f"{SIGNATURE_HEADER} does not match the URL and form")
        return WebhookReply(receipts=_receipts(params))

    def signed(self, url: str, params: list[tuple[str, str]], given: str) -> bool:
        if not given.isascii():
            return False
        matches = [
            hmac.compare_digest(signature(self._auth_token, candidate, params), given)
            for candidate in url_variants(url)
        ]
        return any(matches)


def url_variants(url: str) -> list[str]:
    """`url` as given, with its scheme's default port and without its port: Twilio signs
    with or without the port depending on the product, so its validators try both."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL whose port can be read: only the one Twilio called
        return [url]
    if not parts.hostname:
        return [url]
    variants = [url]
    if port is None and parts.scheme in _DEFAULT_PORTS:
        variants.append(_with_netloc(parts, f"{parts.netloc}:{_DEFAULT_PORTS[parts.scheme]}"))
    elif port is not None:
        variants.append(_with_netloc(parts, parts.netloc.rsplit(":", 1)[0]))
    return variants


def _with_netloc(parts: SplitResult, netloc: str) -> str:
    return parts._replace(netloc=netloc).geturl()


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("ascii")  # percent-encoded: raw non-ASCII bytes are no form
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
        )
    except ValueError as error:  # UnicodeDecodeError included
        raise WebhookRejected(400, "the body is not a UTF-8 form") from error


def _receipts(params: list[tuple[str, str]]) -> tuple[ProviderReceipt, ...]:
    sid = _one(params, "MessageSid")
    status = _one(params, "MessageStatus")
    if sid is None or status is None:
        raise WebhookRejected(400, "MessageSid and MessageStatus are required, once each")
    if not _MESSAGE_SID.fullmatch(sid):
        raise WebhookRejected(400, "MessageSid is not a message SID")
    mapped = STATUSES.get(status)
    if mapped is None:
        return ()  # queued, sending, accepted, scheduled, canceled …: no receipt
    code = message = None
    if mapped == "failed":
        error_code = _one(params, "ErrorCode")
        code = error_code if error_code and _CODE.fullmatch(error_code) else None
        message = clean_text(_one(params, "ErrorMessage"))
    return (ProviderReceipt(provider_message_id=sid, status=mapped, code=code, message=message),)


def _one(params: list[tuple[str, str]], name: str) -> str | None:
    """The value of `name`, or None when it is missing, empty or has different values."""
    values = {value for key, value in params if key == name}
    return values.pop() if len(values) == 1 and "" not in values else None


def clean_text(value: str | None, limit: int = _MESSAGE_LIMIT) -> str | None:
    """`value` without control characters, at most `limit` characters, or None."""
    if value is None:
        return None
    text = _CONTROL.sub(" ", value).strip()
    return text[:limit] or None
