"""Logs are JSON lines off a terminal, carry the notification id from POST to ack, and
never show API keys, provider tokens or full phone numbers. The per-message lines of
a successful delivery are DEBUG (they cost ~15 % of a worker's CPU), so the trace
test runs with --verbose."""

from __future__ import annotations

import json

import aiohttp

from wa_gateway.logs import Masker, mask_phone_numbers

from ..conftest import finish, outbox_lines, spawn, wait_for, wait_ready
from .test_process import free_port

API_KEY = "gw-key-7d1c0b2a9e"
PROVIDER_TOKEN = "provider-token-55aa77cc"


async def test_every_line_is_json_with_the_notification_id_and_no_secret(process_env, tmp_path):
    port = free_port()
    env = process_env(
        GATEWAY_PORT=str(port), GATEWAY_API_KEYS=API_KEY, WA_API_KEY=PROVIDER_TOKEN,
        WA_ALLOW_RAW_TARGETS="true",
    )
    process = await spawn("run", env, "--verbose")  # a line per queued and per sent message
    await wait_ready(port)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        async with http.post(
            f"http://127.0.0.1:{port}/notify",
            json={"to": "+6281234567890", "text": f"token {PROVIDER_TOKEN} for 081234567890"},
        ) as response:
            notification_id = (await response.json())["id"]
    await wait_for(lambda: outbox_lines(tmp_path / "outbox.jsonl"), timeout=10)
    code, stderr = await finish(process)

    assert code == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    about = [r for r in records if r.get("notification_id") == notification_id]
    assert {r["logger"] for r in about} >= {"wa_gateway.gateway", "wa_gateway.outcomes"}  # POST to ack
    assert any("queued" in r["event"] for r in about) and any(r["event"].startswith("sent") for r in about)
    assert API_KEY not in stderr and PROVIDER_TOKEN not in stderr
    assert "6281234567890" not in stderr and "081234567890" not in stderr
    assert "+6281*******90" in stderr  # recognisable, not callable


def test_masker_hides_secrets_and_phone_numbers_but_not_ids_or_group_ids():
    masker = Masker(["s3cr3t-value"])
    assert masker.mask("key s3cr3t-value in url") == "key *** in url"
    assert mask_phone_numbers("to +6281234567890.") == "to +6281*******90."
    for untouched in ("120363195657916590@g.us", "12345678-1234-4abc-8def-123456789012", "ID: 42", "2026-11-25T09:04:26Z"):
        assert mask_phone_numbers(untouched) == untouched


async def test_a_malformed_http_request_is_one_warning_line_without_traceback(process_env, tmp_path):
    import asyncio

    port = free_port()
    process = await spawn("serve", process_env(GATEWAY_PORT=str(port)))
    await wait_ready(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /notify HTTP/1.1\r\nHost: x\r\nBad\x00Header: 1\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    code, stderr = await finish(process)

    assert answer.split(b" ")[1] == b"400"
    assert code == 0
    assert "Traceback" not in stderr
    [line] = [json.loads(line) for line in stderr.splitlines() if "malformed HTTP request" in line]
    assert line["level"] == "warning"


async def test_log_provider_line_has_the_message_fields_at_top_level(monkeypatch, tmp_path):
    """One JSON line per message, its fields real fields (not JSON inside "event"), the
    text byte-exact; the outbox file keeps its own format."""
    import io
    import logging

    from wa_gateway.logs import configure_logging
    from wa_gateway.provider import ProviderConfig
    from wa_gateway.providers.log import LogProvider
    from wa_gateway.testing import SAMPLE_GROUP, SAMPLE_TEXT, group_message

    text = SAMPLE_TEXT + "\nStatus: pengajuan disetujui ✅ 👍🏽"
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(json_output=True)
        provider = LogProvider(ProviderConfig(settings={"WA_LOG_OUTBOX": str(tmp_path / "outbox.jsonl")}))
        await provider.send(group_message(text=text, id="msg-7"))
        await provider.close()
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])

    [line] = [line for line in stderr.getvalue().splitlines() if '"wa_gateway.outbox"' in line]
    record = json.loads(line)
    assert record["event"] == "delivered"
    assert (record["id"], record["to"], record["target"], record["provider"]) == (
        "msg-7", SAMPLE_GROUP, SAMPLE_GROUP, "log",
    )
    assert record["text"] == text
    assert json.dumps(text, ensure_ascii=False) in line  # not \u-escaped
    [outbox] = (tmp_path / "outbox.jsonl").read_text(encoding="utf-8").splitlines()
    assert list(json.loads(outbox)) == ["id", "to", "target", "text", "provider", "time"]
    assert json.loads(outbox)["text"] == text
