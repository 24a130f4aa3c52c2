"""The bytes of one AMQP 0-9-1 `basic.publish`, written by hand for the messages we send.

pamqp builds a method object, a header object and a properties object per publish and
marshals each through its generic encoder: about a tenth of the gateway's CPU per
request. Our publishes all have the same shape (persistent JSON, a message id, maybe a
header table), so the method frame is cached per exchange and routing key and the
content header is packed with one struct call. tests/unit/test_amqp_frames.py holds
every shape to pamqp's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pamqp import encode

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
"""The content type and encoding of every message this project publishes."""

FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC_CLASS, _PUBLISH_METHOD = 60, 40

# Basic property flags (AMQP 0-9-1, 4.2.6.1), the ones our messages carry
_CONTENT_TYPE = 1 << 15
_CONTENT_ENCODING = 1 << 14
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_MESSAGE_ID = 1 << 7

_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_HEAD = struct.Struct(">HHQH")


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}…")
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish_method(channel: int, exchange: str, routing_key: str, *, mandatory: bool) -> bytes:
    """The `basic.publish` method frame (ticket 0, not immediate)."""
    payload = (
        struct.pack(">HHH", _BASIC_CLASS, _PUBLISH_METHOD, 0)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + bytes((1 if mandatory else 0,))
    )
    return _frame(_METHOD, channel, payload)


class JsonHeader:
    """Content headers of persistent JSON messages (`publisher.persistent_message`), per body
    size, message id and optional header table."""

    def __init__(self) -> None:
        self._before_headers = _shortstr(CONTENT_TYPE) + _shortstr(CONTENT_ENCODING)

    def frame(
        self, channel: int, body_size: int, message_id: str, headers: Mapping[str, Any] | None = None
    ) -> bytes:
        flags = _CONTENT_TYPE | _CONTENT_ENCODING | _DELIVERY_MODE | _MESSAGE_ID
        table = b""
        if headers:
            flags |= _HEADERS
            table = encode.field_table(dict(headers))
        payload = (
            _HEADER_HEAD.pack(_BASIC_CLASS, 0, body_size, flags)
            + self._before_headers
            + table
            + b"\x02"  # delivery mode 2: persistent
            + _shortstr(message_id)
        )
        return _frame(_HEADER, channel, payload)


def body_frames(channel: int, body: bytes, max_content: int) -> bytes:
    """The body in frames of at most `max_content` bytes (frame_max less 8); none when empty."""
    if len(body) <= max_content:
        return _frame(_BODY, channel, body) if body else b""
    view = memoryview(body)
    return b"".join(
        _frame(_BODY, channel, bytes(view[at:at + max_content])) for at in range(0, len(body), max_content)
    )
