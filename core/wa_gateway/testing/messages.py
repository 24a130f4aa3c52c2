"""Sample messages: the texts, targets, media and template parameters that break
encodings and routing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models import Media, Notification, Target

SAMPLE_TEXT = "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi Śantoso"
"""Emoji, WhatsApp markup, a newline and a non-ASCII letter: what breaks encodings."""
SAMPLE_PHONE = "+6281234567890"
SAMPLE_GROUP = "120363195657916590@g.us"

SAMPLE_CAPTION = "📎 *PO-42* untuk Budi Śantoso\nTotal: Rp 2.500.000 ✅"
"""A caption with emoji, markup, a newline and non-ASCII letters."""
SAMPLE_IMAGE_URL = "https://files.example.co.id/foto/barang-42.jpg"
SAMPLE_DOCUMENT_URL = "https://files.example.co.id/po/PO-42.pdf?sig=a%2Fb%3D&v=2"
"""With percent-escapes and a query: the provider must get it exactly, not re-encoded."""
SAMPLE_FILENAME = "PO-42 Budi Śantoso.pdf"
SAMPLE_TEMPLATE_PARAMS: tuple[str, ...] = ("42", "Budi Śantoso 🙂", "Rp 2.500.000 — ✅ disetujui")
"""A template's body parameters, rendered: digits, a name with a non-ASCII letter and
an emoji, a dash and a check mark. No newline: Meta refuses one in a parameter."""

MEDIA_URLS = {"image": SAMPLE_IMAGE_URL, "document": SAMPLE_DOCUMENT_URL}


def sample_media(
    kind: str, *, caption: str | None = None, filename: str | None = None
) -> Media:
    """SAMPLE_IMAGE_URL or SAMPLE_DOCUMENT_URL as media of `kind`; a document gets
    SAMPLE_FILENAME unless `filename` says otherwise."""
    if kind == "document" and filename is None:
        filename = SAMPLE_FILENAME
    return Media.model_validate(
        {"url": MEDIA_URLS[kind], "kind": kind, "caption": caption, "filename": filename}
    )


def phone_message(
    address: str = SAMPLE_PHONE,
    text: str = SAMPLE_TEXT,
    *,
    id: str = "msg-1",
    event: str | None = None,
    media: Media | Mapping[str, Any] | None = None,
    templates: Mapping[str, Mapping[str, Any]] | None = None,
    use_template: bool = False,
) -> Notification:
    return _message("phone", address, text, id, event, media, templates, use_template)


def group_message(
    address: str = SAMPLE_GROUP,
    text: str = SAMPLE_TEXT,
    *,
    id: str = "msg-1",
    event: str | None = None,
    media: Media | Mapping[str, Any] | None = None,
    templates: Mapping[str, Mapping[str, Any]] | None = None,
    use_template: bool = False,
) -> Notification:
    return _message("group", address, text, id, event, media, templates, use_template)


def _message(
    kind: str,
    address: str,
    text: str,
    id: str,
    event: str | None,
    media: Media | Mapping[str, Any] | None,
    templates: Mapping[str, Mapping[str, Any]] | None,
    use_template: bool,
) -> Notification:
    """A queued notification as the gateway builds it. `media` as a Media or as the
    `media` object of a POST; `templates` rendered, by provider name."""
    return Notification(
        id=id,
        to=address,
        target=Target.model_validate({"kind": kind, "address": address}),
        text=text,
        event=event,
        media=Media.model_validate(media) if isinstance(media, Mapping) else media,
        templates={name: dict(template) for name, template in (templates or {}).items()},
        use_template=use_template,
    )

