"""Turning a request (`to` + `text`, or `event` + `data`) into the notifications to queue.

Shared by POST /notify and `wa-gateway send`, so both refuse the same things in the same
words: whatever cannot be delivered is refused here, not queued to die in the worker.
Nothing here knows HTTP; the gateway answers `InvalidNotification` with a 422.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from .events import EventCatalog, EventError
from .models import Notification, NotifyRequest, Target
from .provider import Capabilities
from .settings import Settings
from .targets import InvalidTarget, resolve_target


class InvalidNotification(ValueError):
    """The request names nothing that can be delivered; the message says what to change."""


class Sources(Protocol):
    """What composing needs from a process's `Services`."""

    settings: Settings
    events: EventCatalog
    capabilities: Capabilities


def parse_request(body: Mapping[str, Any]) -> NotifyRequest:
    try:
        return NotifyRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidNotification(describe(exc)) from None


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def check_capabilities(sources: Sources, target: Target, text: str) -> None:
    """Refuse what the configured provider cannot deliver, rather than queue a dead message."""
    capabilities = sources.capabilities
    refusal = capabilities.refusal(target.kind, text)
    if refusal:
        field = "to" if capabilities.refusal(target.kind, "") else "text"  # the target, or its text
        raise InvalidNotification(f"{field}: provider {sources.settings.wa_provider!r} {refusal}")


def _target(sources: Sources, to: str) -> Target:
    settings = sources.settings
    try:
        return resolve_target(
            to,
            settings.group_aliases,
            allow_raw=settings.wa_allow_raw_targets,
            default_country=settings.wa_default_country,
        )
    except InvalidTarget as exc:
        raise InvalidNotification(f"to: {exc}") from None


def build_notifications(sources: Sources, request: NotifyRequest) -> list[Notification]:
    """One notification per target: `to` + `text`, or an event rendered for each alias."""
    if request.event is not None:
        try:
            event = sources.events.get(request.event)
            text = event.render(request.data or {})
        except EventError as exc:
            raise InvalidNotification(str(exc)) from None
        pairs = [(alias, _target(sources, alias)) for alias in event.targets]
    else:
        assert request.to is not None and request.text is not None  # guaranteed by the model
        text = request.text
        pairs = [(request.to, _target(sources, request.to))]
    notifications = []
    for to, target in pairs:
        check_capabilities(sources, target, text)
        notifications.append(
            Notification(id=str(uuid.uuid4()), to=to, target=target, text=text, event=request.event)
        )
    return notifications
