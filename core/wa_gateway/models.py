"""Pydantic models of the HTTP API and of the queued message.

`Notification` is the one message format on the queue: the gateway writes it, the
worker reads it, and its `v` field lets a future format live beside this one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT_LENGTH = 4096
"""The longest text any provider accepts (Meta's limit); providers may declare less."""


class Target(BaseModel):
    """Where a message goes, already validated and normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["phone", "group"]
    address: str = Field(description="E.164 with '+' for a phone, '<digits>@g.us' for a group")

    @property
    def digits(self) -> str:
        """The phone number without '+' (country code first), as Watzap and Meta want it."""
        return self.address.lstrip("+")


MAX_MEDIA_URL = 2048
MEDIA_KINDS = ("image", "document")


class Media(BaseModel):
    """A picture or a file by URL: the provider fetches it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_MEDIA_URL, description="https:// (the provider downloads it)")
    kind: Literal["image", "document"]
    filename: str | None = Field(default=None, min_length=1, max_length=240,
                                 description="The name the recipient sees (documents)")
    caption: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_LENGTH,
                                description="Text shown with the media; default: `text`")

    @model_validator(mode="after")
    def _document_only_filename(self) -> Media:
        if self.filename is not None and self.kind != "document":
            raise ValueError("'filename' goes with a document")
        for name in ("caption", "filename"):
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                raise ValueError(f"'{name}' contains a NUL character")
        return self


class NotifyRequest(BaseModel):
    """Body of POST /notify: either `to` + `text`, or `event` + `data`."""

    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="An alias (WA_GROUP_<NAME>_ID), or an E.164 number / group id when raw targets are allowed",
        examples=["logistic"],
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        description="The message, UTF-8, WhatsApp formatting allowed",
        examples=["🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"],
    )
    event: str | None = Field(
        default=None, min_length=1, max_length=128, description="An event name from the events file"
    )
    data: dict[str, Any] | None = Field(default=None, description="Values the event's template uses")
    media: Media | None = Field(default=None, description="An image or a document to send; `text` is optional then")
    callback_url: str | None = Field(
        default=None, max_length=2048,
        description="Where each status change of this notification is POSTed (signed, Standard "
        "Webhooks); its host must be in GATEWAY_CALLBACK_HOSTS. Default: GATEWAY_CALLBACK_URL",
        examples=["https://erp.example.co.id/hooks/whatsapp"],
    )

    @model_validator(mode="after")
    def _one_form(self) -> NotifyRequest:
        if self.event is not None:
            if self.to is not None or self.text is not None:
                raise ValueError("send either 'event' (+ 'data') or 'to' + 'text', not both")
            return self
        if self.data is not None:
            raise ValueError("'data' goes with 'event'")
        if self.to is None or (self.text is None and self.media is None):
            raise ValueError("'to' and 'text' are required (or 'to' and 'media', or 'event' with 'data')")
        if self.text is not None and not self.text.strip():
            raise ValueError("'text' is empty")
        if self.text is not None and "\x00" in self.text:
            raise ValueError("'text' contains a NUL character")
        return self


class Notification(BaseModel):
    """The queued message (format version 1). Its body never changes on the way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    id: str
    to: str = Field(description="The target as the caller named it (alias or raw)")
    target: Target
    text: str
    event: str | None = None
    channel: str = Field(default="default", description="The channel (sender) chosen at POST; its work queue holds it")
    callback_url: str | None = Field(default=None, description="Where its status changes are POSTed")
    media: Media | None = None
    templates: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The event's templates, rendered, by provider name: sent instead of the "
        "text when the recipient is outside the 24-hour window",
    )
    use_template: bool = Field(default=False, description="Send the provider's template, not the text")

    @property
    def caption(self) -> str:
        """What goes with the media: its own caption, else the text."""
        if self.media is None:
            return self.text
        return self.media.caption if self.media.caption is not None else self.text
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, body: bytes) -> Notification:
        return cls.model_validate_json(body)


class Queued(BaseModel):
    """202 answer: the broker confirmed the message."""

    id: str
    status: Literal["queued"] = "queued"
    ids: list[str] | None = Field(
        default=None, description="Every notification id, when an event goes to several targets"
    )


class ErrorAnswer(BaseModel):
    """Every error answer: a stable code for programs and a sentence for people."""

    error: str
    detail: str


class DeliveryStatus(BaseModel):
    """Answer of GET /notify/{id}."""

    id: str
    status: Literal["queued", "retrying", "sent", "dead"]
    attempts: int = 0
    next_try_at: datetime | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    reason: str | None = None
    updated_at: datetime | None = None
