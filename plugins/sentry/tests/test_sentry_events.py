"""The real sentry-sdk against a local fake Sentry: what reaches it for a dead letter, and
for a late failure (a message the provider accepted, then reported undeliverable: the
`message_failed` hook).

The fake ingestion endpoint takes the envelopes the SDK posts to `/api/1/envelope/`
(gzip-compressed by default), so the tests read the very bytes Sentry would store.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
import wa_gateway_sentry
from aiohttp import web
from aiohttp.test_utils import TestServer

from wa_gateway import LateFailure
from wa_gateway.plugins import make_plugin_manager
from wa_gateway.testing import phone_message

PHONE = "+6281234567890"
LOCAL_PHONE = "081234567890"
TEXT = "🆕 REQUEST BARU Budi\nID: 42"
NOTIFICATION_ID = str(uuid.UUID(int=42))
REASON = f"(#131026) Message undeliverable: recipient {LOCAL_PHONE} is not on WhatsApp"


class FakeSentry:
    """Records every envelope; `answer` None means the endpoint never answers."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        self.requests = 0

    async def envelope(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()  # aiohttp undoes a Content-Encoding it knows …
        if body[:2] == b"\x1f\x8b":  # … and this undoes gzip if it did not
            body = gzip.decompress(body)
        self.envelopes.append(body)
        return web.json_response({"id": uuid.uuid4().hex})

    def events(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.envelopes:
            lines = raw.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found


@pytest.fixture(autouse=True)
def fresh_sentry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test reads the DSN anew, from its own environment and working directory."""
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    monkeypatch.chdir(tmp_path)
    wa_gateway_sentry._state.clear()
    yield
    sentry_sdk.get_client().close(timeout=0)
    sentry_sdk.get_global_scope().set_client(None)  # nothing of one test reaches the next
    wa_gateway_sentry._state.clear()


@pytest.fixture
async def fake_sentry() -> AsyncIterator[tuple[FakeSentry, int]]:
    fake = FakeSentry()
    app = web.Application()
    app.router.add_post("/api/1/envelope/", fake.envelope)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    yield fake, server.port
    await server.close()


def dsn(port: int) -> str:
    return f"http://publickey@127.0.0.1:{port}/1"


HEADERS: dict[str, Any] = {
    "x-channel": "people",
    "x-provider": "meta",
    "x-provider-code": "131026",
    "x-attempts": 1,
    "x-error": REASON,
    "x-last-error": REASON,
}


async def dead_letter(message: Any = None, reason: str = REASON, headers: dict[str, Any] | None = None) -> None:
    """The hook as the worker's observers call it: through the plugin manager."""
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[wa_gateway_sentry])
    if message is None:
        message = phone_message(PHONE, TEXT, id=NOTIFICATION_ID)
    results = plugins.manager.hook.message_dead_lettered(
        message=message, reason=reason, headers=dict(HEADERS if headers is None else headers)
    )
    for result in results:
        if result is not None:
            await result


async def test_a_dead_letter_is_one_error_event_tagged_and_fingerprinted_by_channel_and_code(
    fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    await dead_letter()
    (event,) = fake.events()
    assert event["level"] == "error"
    assert event["fingerprint"] == ["wa-gateway-dead-letter", "people", "131026"]
    assert event["tags"] == {
        "channel": "people",
        "provider": "meta",
        "code": "131026",
        "kind": "permanent",
        "notification_id": NOTIFICATION_ID,
    }
    message = event.get("message") or event["logentry"]["message"]
    assert message == "dead letter: provider refused the message (meta, code 131026)"
    assert not event.get("breadcrumbs") and "request" not in event and "user" not in event


async def test_no_phone_number_and_no_message_text_anywhere_in_the_envelope(
    fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    sentry_sdk.add_breadcrumb(message=f"sending {TEXT} to {PHONE}")  # what a careless caller leaves
    await dead_letter()
    assert fake.envelopes
    raw = b"\n".join(fake.envelopes)
    for secret in (PHONE, PHONE.lstrip("+"), LOCAL_PHONE, "81234567890", "REQUEST BARU", "Budi", REASON):
        assert secret.encode() not in raw, secret
        assert json.dumps(secret).encode() not in raw, secret  # nor JSON-escaped (the emoji)


async def test_one_outage_is_one_issue_whatever_the_reason_text(
    fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    await dead_letter(reason="retries exhausted after 5 attempts: recipient 0811 down")
    await dead_letter(
        message=phone_message("+6289876543210", "another text", id=str(uuid.uuid4())),
        reason="retries exhausted after 5 attempts: recipient 0898 down",
    )
    first, second = fake.events()
    assert first["fingerprint"] == second["fingerprint"]
    assert first["tags"]["kind"] == second["tags"]["kind"] == "exhausted"


async def test_unreadable_body_and_no_provider_code_are_tagged_none(
    fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[wa_gateway_sentry])
    for result in plugins.manager.hook.message_dead_lettered(
        message=None, reason=f"unparseable message: {PHONE}", headers={"x-channel": "default"}
    ):
        await result
    (event,) = fake.events()
    assert event["fingerprint"] == ["wa-gateway-dead-letter", "default", "none"]
    assert event["tags"] == {"channel": "default", "provider": "none", "code": "none", "kind": "unparseable"}
    assert PHONE.encode() not in b"".join(fake.envelopes)


async def test_a_header_that_carries_a_number_becomes_redacted(
    fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    await dead_letter(headers={**HEADERS, "x-provider-code": PHONE, "x-channel": f"to {LOCAL_PHONE}"})
    (event,) = fake.events()
    assert event["tags"]["code"] == event["tags"]["channel"] == "redacted"
    assert b"81234567890" not in b"".join(fake.envelopes)


async def test_sentry_dsn_in_dot_env_of_the_working_directory_is_read(
    fake_sentry: tuple[FakeSentry, int], tmp_path: Path
) -> None:
    fake, port = fake_sentry
    (tmp_path / ".env").write_text(f"SENTRY_DSN={dsn(port)}\n", encoding="utf-8")
    await dead_letter()
    assert len(fake.events()) == 1


async def test_without_sentry_dsn_nothing_is_sent(fake_sentry: tuple[FakeSentry, int]) -> None:
    fake, _ = fake_sentry
    await dead_letter()
    assert fake.requests == 0
    assert sentry_sdk.get_client().dsn is None


async def test_a_malformed_dsn_turns_the_plugin_off_without_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY_DSN", "not-a-dsn")
    await dead_letter()
    await dead_letter()
    assert wa_gateway_sentry._state == {"on": False}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_sentry_that_is_down_never_raises_and_never_blocks_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY_DSN", dsn(_closed_port()))
    started = time.monotonic()
    await dead_letter()
    assert time.monotonic() - started < wa_gateway_sentry.FLUSH_TIMEOUT + 1.5


async def test_a_sentry_that_never_answers_costs_at_most_the_flush_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("SENTRY_DSN", dsn(silent.getsockname()[1]))
        started = time.monotonic()
        await dead_letter()
        elapsed = time.monotonic() - started
    assert elapsed < wa_gateway_sentry.FLUSH_TIMEOUT + 1.5


async def test_the_event_loop_keeps_running_while_the_event_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush waits in a thread: other tasks run meanwhile."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("SENTRY_DSN", dsn(silent.getsockname()[1]))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        await dead_letter()
        task.cancel()
    assert ticks >= 10  # ~2 s of flush timeout, a tick every 50 ms


# -- late failures ------------------------------------------------------------

WORDS = f"Message failed to send because more than 24 hours have passed since {PHONE} replied: {TEXT}"


def failure(**changes: Any) -> LateFailure:
    values: dict[str, Any] = {
        "notification_id": NOTIFICATION_ID, "channel": "people", "provider": "meta",
        "provider_message_id": "wamid.HBgLNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjA0001",
        "code": "131047", "message": WORDS,
    }
    return LateFailure(**{**values, **changes})


async def failed(late: LateFailure) -> None:
    plugins = make_plugin_manager(load_entry_points=False, extra_plugins=[wa_gateway_sentry])
    for result in plugins.manager.hook.message_failed(failure=late):
        if result is not None:
            await result


@pytest.fixture
def sentry_on(fake_sentry: tuple[FakeSentry, int], monkeypatch: pytest.MonkeyPatch) -> FakeSentry:
    fake, port = fake_sentry
    monkeypatch.setenv("SENTRY_DSN", dsn(port))
    return fake


async def test_a_late_failure_is_one_error_event_tagged_and_fingerprinted_by_channel_and_code(
    sentry_on: FakeSentry,
) -> None:
    await failed(failure())

    [event] = sentry_on.events()
    assert event["level"] == "error"
    assert event["tags"] == {"channel": "people", "provider": "meta", "code": "131047", "kind": "failed",
                             "notification_id": NOTIFICATION_ID}
    assert event["fingerprint"] == ["wa-gateway-failed", "people", "131047"]
    assert event["message"] == "failed after the provider accepted it (meta, code 131047)"


async def test_no_phone_number_and_no_provider_words_anywhere_in_the_envelope(sentry_on: FakeSentry) -> None:
    await failed(failure())

    raw = b"".join(sentry_on.envelopes)
    assert raw
    for secret in (PHONE, PHONE[1:], "24 hours", "REQUEST BARU", "wamid."):
        assert secret.encode() not in raw, secret
    assert b"Budi" not in raw and "🆕".encode() not in raw


async def test_one_outage_is_one_issue_and_a_late_failure_is_not_a_dead_letter_issue(sentry_on: FakeSentry) -> None:
    await failed(failure(notification_id="00000000-0000-0000-0000-000000000001", message="other words"))
    await failed(failure(notification_id="00000000-0000-0000-0000-000000000002", message=None))
    await dead_letter()

    fingerprints = [tuple(event["fingerprint"]) for event in sentry_on.events()]
    assert fingerprints[0] == fingerprints[1] == ("wa-gateway-failed", "people", "131047")
    assert fingerprints[2][0] == "wa-gateway-dead-letter"


async def test_a_code_or_channel_that_carries_a_number_becomes_redacted(sentry_on: FakeSentry) -> None:
    await failed(failure(code=PHONE, channel="6281234567890"))

    [event] = sentry_on.events()
    assert event["tags"]["code"] == "redacted" and event["tags"]["channel"] == "redacted"
    assert PHONE[1:] not in json.dumps(event)


async def test_without_sentry_dsn_a_late_failure_sends_nothing(fake_sentry: tuple[FakeSentry, int]) -> None:
    fake, _ = fake_sentry
    await failed(failure())
    assert fake.requests == 0
