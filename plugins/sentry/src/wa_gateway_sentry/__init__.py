"""Every dead letter as a Sentry event, without a phone number or a message text in it.

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

from wa_gateway import Notification, hookimpl

if TYPE_CHECKING:
    from sentry_sdk.types import Event

__all__ = ["DSN_VARIABLE", "FINGERPRINT_ROOT", "FLUSH_TIMEOUT", "describe", "message_dead_lettered", "scrub"]

log = logging.getLogger(__name__)

DSN_VARIABLE = "SENTRY_DSN"
FINGERPRINT_ROOT = "wa-gateway-dead-letter"
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


def scrub(event: Event, hint: dict[str, Any]) -> Event | None:
    """`before_send`: our own dead-letter events, with nothing but what `describe` made.

    Any other event (an SDK integration, someone else's capture) is dropped.
    """
    fingerprint: Any = event.get("fingerprint")
    if not isinstance(fingerprint, list) or fingerprint[:1] != [FINGERPRINT_ROOT]:
        return None
    given = cast("dict[str, Any]", event)
    clean: dict[str, Any] = {key: given[key] for key in KEPT if key in given}
    message = given.get("message") or (given.get("logentry") or {}).get("message")
    clean["message"] = str(message) if str(message).startswith("dead letter: ") else "dead letter"
    tags = given.get("tags") or {}
    clean["tags"] = {key: _safe(tags[key]) for key in TAGS if key in tags and key != "notification_id"}
    if "notification_id" in tags and _UUID.fullmatch(str(tags["notification_id"])):
        clean["tags"]["notification_id"] = str(tags["notification_id"])
    attempts = (given.get("extra") or {}).get("attempts")
    clean["extra"] = {"attempts": attempts if isinstance(attempts, int) else 0}
    clean["fingerprint"] = [_safe(part) if i else FINGERPRINT_ROOT for i, part in enumerate(fingerprint[:3])]
    contexts = given.get("contexts") or {}
    clean["contexts"] = {key: contexts[key] for key in CONTEXTS if key in contexts}
    return cast("Event", clean)


@hookimpl
async def message_dead_lettered(message: Notification | None, reason: str, headers: dict[str, Any]) -> None:
    """Report the dead letter; sending waits in a thread, so the worker's loop never blocks."""
    if not _enabled():
        return
    event = describe(message, reason, headers)
    with sentry_sdk.new_scope() as scope:
        scope.clear_breadcrumbs()
        sentry_sdk.capture_event(cast("Event", event))
    await asyncio.to_thread(sentry_sdk.flush, FLUSH_TIMEOUT)
