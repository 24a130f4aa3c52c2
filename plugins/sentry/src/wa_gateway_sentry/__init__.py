"""Every dead letter and every late failure as a Sentry event, without a phone number
or a message text in it.

A late failure is a message the provider accepted and later reported undeliverable
(a `failed` receipt: Meta 131047, Twilio 63016 …), seen through the `message_failed`
hook once the ledger recorded it.

On only when `SENTRY_DSN` is set (the process environment, else `.env` in the working
directory, read at the first dead letter); without it the hook does nothing. One
outage is one Sentry issue: the fingerprint is the channel and the provider's code,
not the reason text, which may echo a number and differs message by message.

What goes out is built here from bounded values (channel, provider, code, a kind
named by the worker's own words) and `before_send` drops everything else an SDK or
integration might add, so a number in a provider's answer cannot reach Sentry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from dotenv import dotenv_values
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.utils import BadDsn

from wa_gateway import LateFailure, Notification, hookimpl

if TYPE_CHECKING:
    from sentry_sdk.types import Event

__all__ = [
    "DSN_VARIABLE", "FAILED_ROOT", "FINGERPRINT_ROOT", "FLUSH_TIMEOUT", "describe", "describe_failure",
    "message_dead_lettered", "message_failed", "scrub",
]

log = logging.getLogger(__name__)

DSN_VARIABLE = "SENTRY_DSN"
FINGERPRINT_ROOT = "wa-gateway-dead-letter"
FAILED_ROOT = "wa-gateway-failed"
"""Fingerprint root of a late failure: its own issue per channel and code."""
FLUSH_TIMEOUT = 2.0
"""Seconds the hook waits (in a thread, never in the event loop) for the event to leave."""

TAGS = ("channel", "provider", "code", "kind", "notification_id")
CONTEXTS = ("runtime", "os")
KEPT = ("event_id", "timestamp", "platform", "level", "logger", "sdk", "environment", "release", "server_name")

_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_NUMBER_LIKE = re.compile(r"\d{7,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_KINDS = {"unparseable", "permanent", "exhausted", "unservable", "callback"}

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _dsn() -> str | None:
    dsn = os.environ.get(DSN_VARIABLE)
    if dsn is None and os.path.isfile(".env"):
        dsn = dotenv_values(".env").get(DSN_VARIABLE)
    return (dsn.strip() or None) if dsn else None


def _enabled() -> bool:
    """Reads the DSN and calls `sentry_sdk.init` once, at the first dead letter."""
    with _lock:
        if "on" not in _state:
            dsn = _dsn()
            if dsn is not None:
                try:
                    _init(dsn)
                except BadDsn:
                    log.warning("%s is not a Sentry DSN; dead letters are not reported to Sentry", DSN_VARIABLE)
                    dsn = None
            _state["on"] = dsn is not None
        return _state["on"]


def _init(dsn: str) -> None:
    sentry_sdk.init(
        dsn=dsn,
        include_local_variables=False,
        max_breadcrumbs=0,
        default_integrations=False,  # no logging, argv, modules … in our events
        auto_enabling_integrations=False,
        integrations=[AtexitIntegration(callback=lambda pending, timeout: None)],  # flush on exit, quietly
        before_send=scrub,
        before_breadcrumb=lambda crumb, hint: None,
        shutdown_timeout=FLUSH_TIMEOUT,
    )


def _safe(value: Any) -> str:
    """A tag value that cannot carry a phone number or free text."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "none"
    if not _SAFE_VALUE.fullmatch(text) or _NUMBER_LIKE.search(text):
        return "redacted"
    return text


def _kind(message: Notification | None, reason: str, headers: dict[str, Any]) -> str:
    declared = str(headers.get("x-kind") or "").lower()
    if declared in _KINDS:
        return declared
    if message is None or reason.startswith("unparseable"):
        return "unparseable"
    if reason.startswith("retries exhausted"):
        return "exhausted"
    if "x-provider-code" in headers or "x-last-error" in headers:
        return "permanent"
    return "unservable"  # the worker refused it before any provider answered


_WORDS = {
    "unparseable": "unreadable message body",
    "permanent": "provider refused the message",
    "exhausted": "retries exhausted",
    "unservable": "no provider can send it",
    "callback": "status callback undeliverable",
}


def describe(message: Notification | None, reason: str, headers: dict[str, Any]) -> dict[str, Any]:
    """The whole Sentry event for one dead letter, from bounded values only."""
    kind = _kind(message, reason, headers)
    channel, provider = _safe(headers.get("x-channel")), _safe(headers.get("x-provider"))
    code = _safe(headers.get("x-provider-code"))
    tags = {"channel": channel, "provider": provider, "code": code, "kind": kind}
    notification_id = message.id if message is not None else None
    if notification_id and _UUID.fullmatch(notification_id):
        tags["notification_id"] = notification_id
    attempts = headers.get("x-attempts")
    return {
        "level": "error",
        "logger": "wa_gateway.dead_letter",
        "message": f"dead letter: {_WORDS[kind]} ({provider}, code {code})",
        "tags": tags,
        "extra": {"attempts": attempts if isinstance(attempts, int) else 0},
        "fingerprint": [FINGERPRINT_ROOT, channel, code],
    }


def describe_failure(failure: LateFailure) -> dict[str, Any]:
    """The whole Sentry event for one late failure, from bounded values only (the
    provider's words may quote the number: they stay out)."""
    channel, provider, code = _safe(failure.channel), _safe(failure.provider), _safe(failure.code)
    tags = {"channel": channel, "provider": provider, "code": code, "kind": "failed"}
    if _UUID.fullmatch(failure.notification_id):
        tags["notification_id"] = failure.notification_id
    return {
        "level": "error",
        "logger": "wa_gateway.failed",
        "message": f"failed after the provider accepted it ({provider}, code {code})",
        "tags": tags,
        "extra": {"attempts": 0},
        "fingerprint": [FAILED_ROOT, channel, code],
    }


_MESSAGE_PREFIX = {FINGERPRINT_ROOT: "dead letter: ", FAILED_ROOT: "failed after the provider accepted it ("}
_DEFAULT_MESSAGE = {FINGERPRINT_ROOT: "dead letter", FAILED_ROOT: "failed after the provider accepted it"}


def scrub(event: Event, hint: dict[str, Any]) -> Event | None:
    """`before_send`: our own events (dead letters, late failures), with nothing but
    what `describe` / `describe_failure` made.

    Any other event (an SDK integration, someone else's capture) is dropped.
    """
    fingerprint: Any = event.get("fingerprint")
    if not isinstance(fingerprint, list) or not fingerprint or fingerprint[0] not in _MESSAGE_PREFIX:
        return None
    root = fingerprint[0]
    given = cast("dict[str, Any]", event)
    clean: dict[str, Any] = {key: given[key] for key in KEPT if key in given}
    message = given.get("message") or (given.get("logentry") or {}).get("message")
    clean["message"] = str(message) if str(message).startswith(_MESSAGE_PREFIX[root]) else _DEFAULT_MESSAGE[root]
    tags = given.get("tags") or {}
    clean["tags"] = {key: _safe(tags[key]) for key in TAGS if key in tags and key != "notification_id"}
    if "notification_id" in tags and _UUID.fullmatch(str(tags["notification_id"])):
        clean["tags"]["notification_id"] = str(tags["notification_id"])
    attempts = (given.get("extra") or {}).get("attempts")
    clean["extra"] = {"attempts": attempts if isinstance(attempts, int) else 0}
    clean["fingerprint"] = [_safe(part) if i else root for i, part in enumerate(fingerprint[:3])]
    contexts = given.get("contexts") or {}
    clean["contexts"] = {key: contexts[key] for key in CONTEXTS if key in contexts}
    return cast("Event", clean)


@hookimpl
async def message_dead_lettered(message: Notification | None, reason: str, headers: dict[str, Any]) -> None:
    """Report the dead letter; sending waits in a thread, so the worker's loop never blocks."""
    if not _enabled():
        return
    await _send(describe(message, reason, headers))


async def _send(event: dict[str, Any]) -> None:
    with sentry_sdk.new_scope() as scope:
        scope.clear_breadcrumbs()
        sentry_sdk.capture_event(cast("Event", event))
    await asyncio.to_thread(sentry_sdk.flush, FLUSH_TIMEOUT)


@hookimpl
async def message_failed(failure: LateFailure) -> None:
    """Report a late failure, as a dead letter is reported."""
    if not _enabled():
        return
    await _send(describe_failure(failure))
