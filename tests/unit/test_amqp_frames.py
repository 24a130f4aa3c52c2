"""The hand-written publish frames are byte for byte what pamqp (aiormq's encoder) writes,
and aiormq still has every part of a channel the publish pipeline relies on."""

from __future__ import annotations

import pamqp.frame
import pytest
from aiormq import Channel
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from wa_gateway.amqp_frames import JsonHeader, body_frames, publish_method
from wa_gateway.publish_pipeline import AIORMQ_CHANNEL_PARTS
from wa_gateway.publisher import persistent_message

short = st.text(max_size=60)
exchange_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.:", max_size=60)
header_values = st.one_of(st.integers(-(2**31), 2**31 - 1), st.text(max_size=40), st.booleans())


def pamqp_header(channel: int, body_size: int, message_id: str, headers: dict | None) -> bytes:
    """persistent_message's properties as aiormq would send them, without aio-pika's
    priority 0 and empty table, which mean the same to every consumer."""
    properties = persistent_message(b"", message_id=message_id, headers=headers).properties
    properties.priority = None
    properties.headers = headers or None
    return pamqp.frame.marshal(ContentHeader(0, body_size, properties), channel)


@given(channel=st.integers(1, 2047), exchange=exchange_names, routing_key=short, mandatory=st.booleans())
def test_the_publish_method_frame_is_pamqps(channel: int, exchange: str, routing_key: str, mandatory: bool) -> None:
    expected = pamqp.frame.marshal(
        Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory), channel
    )
    assert publish_method(channel, exchange, routing_key, mandatory=mandatory) == expected


@settings(max_examples=200)
@given(
    channel=st.integers(1, 2047),
    body_size=st.integers(0, 2**40),
    message_id=st.text(min_size=1, max_size=80),
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=30), header_values, max_size=5),
)
def test_the_content_header_is_pamqps(channel: int, body_size: int, message_id: str, headers: dict | None) -> None:
    assert JsonHeader().frame(channel, body_size, message_id, headers) == pamqp_header(
        channel, body_size, message_id, headers
    )


def test_a_notification_header_with_the_headers_the_worker_sets() -> None:
    headers = {"x-attempts": 3, "x-replayed-at": "2026-11-28T11:00:00Z", "x-kind": "callback"}
    message_id = "0b9d1f3e-0000-4000-8000-00000000002a"
    assert JsonHeader().frame(5, 321, message_id, headers) == pamqp_header(5, 321, message_id, headers)


@pytest.mark.parametrize("size", [0, 1, 131_063, 131_064, 131_065, 400_000])
def test_bodies_are_split_as_aiormq_splits_them(size: int) -> None:
    max_content = 131_072 - 8
    body = bytes(i % 251 for i in range(size))
    chunks = [body[at:at + max_content] for at in range(0, size, max_content)]
    expected = b"".join(pamqp.frame.marshal(ContentBody(chunk), 7) for chunk in chunks)
    assert body_frames(7, body, max_content) == expected


def test_utf8_bodies_and_ids_go_out_byte_exact() -> None:
    body = "🆕 *Permintaan pembelian* #42 oleh Budi — “logistik” 🚚".encode()
    assert body_frames(1, body, 1000) == pamqp.frame.marshal(ContentBody(body), 1)
    message_id = "pesanan-ü-🚚"
    assert JsonHeader().frame(1, len(body), message_id) == pamqp_header(1, len(body), message_id, None)


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        publish_method(1, "x", "é" * 128, mandatory=True)


def test_aiormq_still_has_what_the_pipeline_uses() -> None:
    channel_parts = set(dir(Channel)) | set(Channel.__init__.__code__.co_names)
    missing = [name for name in AIORMQ_CHANNEL_PARTS if name not in channel_parts]
    assert not missing, f"aiormq.Channel no longer has {missing}: see wa_gateway/publish_pipeline.py"
