"""Sample messages: the texts and targets that break encodings and routing."""

from __future__ import annotations

from ..models import Notification, Target

SAMPLE_TEXT = "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi Śantoso"
"""Emoji, WhatsApp markup, a newline and a non-ASCII letter: what breaks encodings."""
SAMPLE_PHONE = "+6281234567890"
SAMPLE_GROUP = "120363195657916590@g.us"


def phone_message(
    address: str = SAMPLE_PHONE, text: str = SAMPLE_TEXT, *, id: str = "msg-1"
) -> Notification:
    return Notification(id=id, to=address, target=Target(kind="phone", address=address), text=text)


def group_message(
    address: str = SAMPLE_GROUP, text: str = SAMPLE_TEXT, *, id: str = "msg-1"
) -> Notification:
    return Notification(id=id, to=address, target=Target(kind="group", address=address), text=text)
