"""Turning a request (`to` + `text`, or `event` + `data`) into the notifications to queue.

Shared by POST /notify and `wa-gateway send`, so both refuse the same things in the same
words: whatever cannot be delivered is refused here, not queued to die in the worker.
Nothing here knows HTTP; the gateway answers `InvalidNotification` with a 422.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from .channels import ChannelPlan
from .events import EventCatalog, EventError
from .models import Media, Notification, NotifyRequest, Target
from .provider import Capabilities
from .settings import Settings, callback_url_refusal
from .targets import InvalidTarget, resolve_target


class InvalidNotification(ValueError):
    """The request names nothing that can be delivered; the message says what to change."""


class Sources(Protocol):
    """What composing needs from a process's `Services`."""

    settings: Settings
    events: EventCatalog
    channels: ChannelPlan
    channel_capabilities: dict[str, Capabilities]


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


def choose_channel(
    sources: Sources, to: str, target: Target, text: str, event_channel: str | None, media: Media | None = None
) -> str:
    """The channel a message goes through, decided here so the queued message carries it:
    the alias's pinned channel, else the event's, else the first in WA_CHANNELS whose
    capabilities serve the target (and the media). Nothing can serve it:
    InvalidNotification (a 422)."""
    plan = sources.channels
    pinned = plan.pins.get(to.strip().lower())
    candidates = [pinned] if pinned else [event_channel] if event_channel else list(plan.routable)
    kind = media.kind if media is not None else None
    shown = (media.caption if media.caption is not None else text) if media is not None else text
    refusals = []
    for name in candidates:
        capabilities = sources.channel_capabilities[name]
        refusal = capabilities.refusal(target.kind, shown, kind)
        if refusal is None:
            return name
        if capabilities.refusal(target.kind, "") is not None:
            field = "to"
        elif kind is not None and capabilities.refusal(target.kind, "", kind) is not None:
            field = "media"
        elif media is not None and media.caption is not None:
            field = "media.caption"
        else:
            field = "text"
        refusals.append((name, field, refusal))
    if len(refusals) == 1 and plan.legacy:  # one channel: the first release's words
        _, field, refusal = refusals[0]
        raise InvalidNotification(f"{field}: provider {plan.channel(candidates[0]).provider!r} {refusal}")
    why = "; ".join(f"channel {name!r} ({plan.channel(name).provider}) {refusal}" for name, _, refusal in refusals)
    field = "to" if all(f == "to" for _, f, _ in refusals) else "text"
    raise InvalidNotification(f"{field}: no channel can send to {to!r}: {why}")


def _target(sources: Sources, to: str) -> Target:
    settings = sources.settings
    try:
        return resolve_target(
            to,
            settings.group_aliases,
            allow_raw=settings.wa_allow_raw_targets,
            default_country=settings.wa_default_country,
            people=sources.channels.people,
        )
    except InvalidTarget as exc:
        raise InvalidNotification(f"to: {exc}") from None


def build_notifications(sources: Sources, request: NotifyRequest) -> list[Notification]:
    """One notification per target: `to` + `text`, or an event rendered for each alias."""
    event_channel = None
    if request.event is not None:
        try:
            event = sources.events.get(request.event)
            text = event.render(request.data or {})
        except EventError as exc:
            raise InvalidNotification(str(exc)) from None
        event_channel = event.channel
        try:
            templates = event.render_templates(request.data or {})
        except EventError as exc:
            raise InvalidNotification(str(exc)) from None
        pairs = [(alias, _target(sources, alias)) for alias in event.targets]
    else:
        assert request.to is not None  # guaranteed by the model, with text or media
        text = request.text or ""
        templates = {}
        pairs = [(request.to, _target(sources, request.to))]
    callback_url = _callback_url(sources.settings, request.callback_url)
    media = _media(sources.settings, request.media)
    notifications = []
    for to, target in pairs:
        channel = choose_channel(sources, to, target, text, event_channel, media)
        notifications.append(Notification(
            id=str(uuid.uuid4()), to=to, target=target, text=text, event=request.event, channel=channel,
            callback_url=callback_url, media=media, templates=templates,
        ))
    return notifications


def _media(settings: Settings, media: Media | None) -> Media | None:
    """The media, if its URL is one a provider will fetch: https (http only with
    WA_ALLOW_HTTP_MEDIA), a host, no credentials, no spaces."""
    if media is None:
        return None
    parts = urlsplit(media.url)
    schemes = ("https", "http") if settings.wa_allow_http_media else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        raise InvalidNotification(f"media.url: must be an {allowed} URL with a host")
    if parts.username or parts.password or any(ch.isspace() or ord(ch) < 32 for ch in media.url):
        raise InvalidNotification("media.url: no credentials, spaces or control characters in it")
    return media


def _callback_url(settings: Settings, given: str | None) -> str | None:
    """The request's callback URL (checked against GATEWAY_CALLBACK_HOSTS), else the default."""
    if given is None:
        return settings.gateway_callback_url if settings.callbacks else None
    if not settings.callbacks:
        raise InvalidNotification(
            "callback_url: callbacks are off here (GATEWAY_CALLBACK_SECRET is not set, or WA_LEDGER=false)"
        )
    refusal = callback_url_refusal(given)
    if refusal:
        raise InvalidNotification(f"callback_url: {refusal}")
    host = (urlsplit(given).hostname or "").lower().rstrip(".")
    if host not in settings.callback_hosts():
        raise InvalidNotification(
            f"callback_url: host {host!r} is not in GATEWAY_CALLBACK_HOSTS"
        )
    return given
