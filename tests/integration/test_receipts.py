"""Receipts end to end, for Meta and for Twilio: POST /notify, the worker sends to a
local fake of the provider's API, then the provider's signed status callbacks reach
`/webhooks/<channel>` and the ledger's timeline shows them. Signatures are computed as
the providers' docs say (Meta: HMAC-SHA256 of the raw body with the app secret; Twilio:
the official `twilio` package's RequestValidator)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from wa_gateway import hookimpl
from wa_gateway.gateway import SERVER_OPTIONS, make_app
from wa_gateway.plugins import make_plugin_manager
from wa_gateway.services import Services
from wa_gateway.testing import Answer, FakeProviderApi

from ..conftest import wait_for

APP_SECRET = "meta-app-secret-0123456789"
VERIFY_TOKEN = "verify-me-please"
PHONE_NUMBER_ID = "106540352242922"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789"
BUDI = "+6281234567890"
ANI = "+6281111111111"


NOW = int(time.time())
"""Meta's `timestamp`: whole seconds, as it sends them."""


def wamid(n: int) -> str:
    return f"wamid.HBgLNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjA{n:04d}"


def twilio_sid(n: int) -> str:
    return f"SM{n:032x}"


class FailureWatcher:
    """An observer plugin: what the message_failed hook saw."""

    def __init__(self) -> None:
        self.failures: list[Any] = []

    @hookimpl
    async def message_failed(self, failure: Any) -> None:
        self.failures.append(failure)


@pytest.fixture
async def gateway(make_settings, aiohttp_client, start_worker):
    """Start gateway + worker for a channel `people` of `provider`, against a fake API."""
    started: list[FakeProviderApi] = []

    async def start(
        provider: str, answers: list[Answer], channel_env: dict[str, str],
        raw_env_extra: dict[str, str] | None = None, **settings: Any,
    ):
        api = FakeProviderApi(*answers)
        await api.__aenter__()
        started.append(api)
        watcher = FailureWatcher()
        plugins = make_plugin_manager(load_entry_points=True, extra_plugins=[watcher])
        env = {
            "WA_CHANNELS": "people",
            "WA_CHANNEL_PEOPLE_PROVIDER": provider,
            "WA_CHANNEL_PEOPLE_API_KEY": "secret-token" if provider == "meta" else AUTH_TOKEN,
            "WA_CHANNEL_PEOPLE_API_URL": api.url,
            **{f"WA_CHANNEL_PEOPLE_{name}": value for name, value in channel_env.items()},
            **(raw_env_extra or {}),
        }
        values = make_settings(wa_allow_raw_targets=True, raw_env=env, **settings)
        services = Services(values, plugins)
        await services.check_ledger()
        client = await aiohttp_client(make_app(services), server_kwargs=dict(SERVER_OPTIONS))
        await services.broker.wait_connected(timeout=10)
        await start_worker(services)
        return client, services, api, watcher

    yield start
    for api in started:
        await api.close()


async def _send(client, to: str) -> str:
    answer = await client.post("/notify", json={"to": to, "text": "🆕 Permintaan #42 dari Budi"})
    assert answer.status == 202, await answer.text()
    return (await answer.json())["id"]


async def _status(client, notification_id: str, status: str) -> dict[str, Any] | None:
    body = await (await client.get(f"/notify/{notification_id}")).json()
    if body["status"] == status and body["events"] and body["events"][-1]["status"] == status:
        return body
    return None


def meta_statuses(*statuses: dict[str, Any]) -> dict[str, Any]:
    """A Meta `messages` webhook with `statuses[]`, as the Cloud API sends it."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "statuses": list(statuses),
                },
            }],
        }],
    }


def meta_status(message_id: str, status: str, timestamp: int, **extra: Any) -> dict[str, Any]:
    return {"id": message_id, "status": status, "timestamp": str(timestamp),
            "recipient_id": "6281234567890", **extra}


async def post_meta(client, payload: dict[str, Any], *, secret: str = APP_SECRET, channel: str = "people"):
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return await client.post(
        f"/webhooks/{channel}", data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )


META_ENV = {
    "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
    "META_APP_SECRET": APP_SECRET,
    "META_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
}


def meta_accepts(n: int) -> Answer:
    return Answer(200, {"messaging_product": "whatsapp", "contacts": [{"input": BUDI, "wa_id": BUDI[1:]}],
                        "messages": [{"id": wamid(n)}]})


async def test_meta_receipts_delivered_read_and_a_late_failure(gateway):
    client, _services, _api, watcher = await gateway("meta", [meta_accepts(1), meta_accepts(2)], META_ENV)

    # Meta's verification handshake
    handshake = await client.get("/webhooks/people", params={
        "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
    assert (handshake.status, await handshake.text()) == (200, "1158201444")
    wrong = await client.get("/webhooks/people", params={
        "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"})
    assert wrong.status == 403

    read_id = await _send(client, BUDI)
    await wait_for(lambda: _status(client, read_id, "sent"))
    failed_id = await _send(client, ANI)
    await wait_for(lambda: _status(client, failed_id, "sent"))

    for status, at in (("delivered", NOW + 1), ("read", NOW + 5)):
        answer = await post_meta(client, meta_statuses(meta_status(wamid(1), status, at)))
        assert answer.status == 200
    body = await wait_for(lambda: _status(client, read_id, "read"))
    assert [e["status"] for e in body["events"]] == ["queued", "sent", "delivered", "read"]
    assert body["provider_message_id"] == wamid(1) and body["error"] is None

    # a late delivered (Meta retried it), and the same read again: recorded once, not applied
    await post_meta(client, meta_statuses(meta_status(wamid(1), "delivered", NOW + 1)))
    await post_meta(client, meta_statuses(meta_status(wamid(1), "read", NOW + 5)))

    failure = meta_status(wamid(2), "failed", NOW + 10, errors=[{
        "code": 131047, "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {"details": "Message failed to send because more than 24 hours have passed"},
    }])
    assert (await post_meta(client, meta_statuses(failure))).status == 200
    body = await wait_for(lambda: _status(client, failed_id, "failed"))
    assert body["error"]["code"] == "131047"
    assert "24 hours" in body["error"]["message"]
    await wait_for(lambda: len(watcher.failures) == 1)
    [seen] = watcher.failures
    assert (seen.notification_id, seen.channel, seen.provider, seen.code) == (failed_id, "people", "meta", "131047")
    metrics = (await (await client.get("/metrics")).text())
    assert 'wa_messages_failed_total{channel="people",code="131047"} 1.0' in metrics

    body = await (await client.get(f"/notify/{read_id}")).json()
    assert [e["status"] for e in body["events"]] == ["queued", "sent", "delivered", "read"]


async def test_meta_webhook_bad_input_records_nothing(gateway, make_settings, aiohttp_client):
    client, _services, _api, _watcher = await gateway("meta", [meta_accepts(1)], META_ENV)
    notification_id = await _send(client, BUDI)
    await wait_for(lambda: _status(client, notification_id, "sent"))
    delivered = meta_statuses(meta_status(wamid(1), "delivered", NOW + 1))

    bad = await post_meta(client, delivered, secret="not-the-app-secret")
    assert bad.status == 401 and (await bad.json())["error"] == "unauthorized"
    unsigned = await client.post("/webhooks/people", json=delivered)
    assert unsigned.status == 401
    huge = await client.post("/webhooks/people", data=b"{" + b" " * (64 * 1024) + b"}",
                             headers={"Content-Type": "application/json"})
    assert huge.status == 413
    body = b'{"object": "whatsapp_business_account", "entry": [{'
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    malformed = await client.post("/webhooks/people", data=body, headers={"X-Hub-Signature-256": signature})
    assert malformed.status == 400 and (await malformed.json())["error"] == "invalid_body"
    assert (await client.post("/webhooks/nosuchchannel", json=delivered)).status == 404
    # an id this gateway never sent (another app on the same number): 200, logged, nothing kept
    stranger = await post_meta(client, meta_statuses(meta_status("wamid.someone-else", "read", NOW + 9)))
    assert stranger.status == 200

    await post_meta(client, delivered)  # the one good request, to know when the writer is done
    body = await wait_for(lambda: _status(client, notification_id, "delivered"))
    assert [e["status"] for e in body["events"]] == ["queued", "sent", "delivered"]


async def test_a_channel_without_its_secret_has_no_webhook(gateway):
    env = {"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID}
    client, *_ = await gateway("meta", [meta_accepts(1)], env)
    answer = await post_meta(client, meta_statuses(meta_status(wamid(1), "read", NOW + 5)))
    assert answer.status == 404 and (await answer.json())["error"] == "not_found"


def twilio_accepts(n: int) -> Answer:
    return Answer(201, {"sid": twilio_sid(n), "status": "queued", "to": f"whatsapp:{BUDI}"})


TWILIO_ENV = {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_FROM": "whatsapp:+14155238886"}


async def post_twilio(client, url: str, params: dict[str, str], *, token: str = AUTH_TOKEN):
    signature = RequestValidator(token).compute_signature(url, params)
    return await client.post(
        "/webhooks/people", data=urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
    )


async def test_twilio_status_callbacks_delivered_read_and_undelivered(gateway, unused_tcp_port_factory):
    # GATEWAY_PUBLIC_URL is where Twilio calls; the signature covers exactly that URL
    public = "https://wa.example.co.id"
    client, _services, api, watcher = await gateway(
        "twilio", [twilio_accepts(1), twilio_accepts(2)], TWILIO_ENV, gateway_public_url=public
    )
    callback = f"{public}/webhooks/people"

    read_id = await _send(client, BUDI)
    await wait_for(lambda: _status(client, read_id, "sent"))
    failed_id = await _send(client, ANI)
    await wait_for(lambda: _status(client, failed_id, "sent"))
    assert [r.form()["StatusCallback"] for r in api.requests] == [callback, callback]

    def status(sid: str, value: str, **extra: str) -> dict[str, str]:
        return {"AccountSid": TWILIO_SID, "MessageSid": sid, "SmsSid": sid, "MessageStatus": value,
                "From": "whatsapp:+14155238886", "To": f"whatsapp:{BUDI}", "ApiVersion": "2010-04-01",
                "ChannelPrefix": "whatsapp", **extra}

    for value in ("sent", "delivered", "read"):
        answer = await post_twilio(client, callback, status(twilio_sid(1), value))
        assert answer.status == 200, await answer.text()
    body = await wait_for(lambda: _status(client, read_id, "read"))
    # the worker's `sent` (Twilio accepted it), then Twilio's own (handed to WhatsApp)
    assert [e["status"] for e in body["events"]] == ["queued", "sent", "sent", "delivered", "read"]
    assert [e["provider"] for e in body["events"]][1:] == ["twilio"] * 4

    undelivered = status(twilio_sid(2), "undelivered", ErrorCode="63016",
                         ErrorMessage="Failed to send freeform message because you are outside the allowed window.")
    forged = await post_twilio(client, callback, undelivered, token="not-the-auth-token")
    assert forged.status == 401
    assert (await post_twilio(client, "https://elsewhere.example/webhooks/people", undelivered)).status == 401
    assert (await post_twilio(client, callback, undelivered)).status == 200
    body = await wait_for(lambda: _status(client, failed_id, "failed"))
    assert body["error"]["code"] == "63016"
    await wait_for(lambda: len(watcher.failures) == 1)
    assert watcher.failures[0].notification_id == failed_id


EVENTS_WITH_TEMPLATE = '''
[new_request]
to = ["budi"]
fields = { id = "int", requester = "str" }
template = """🆕 *REQUEST BARU*
ID: {{ id }}
Oleh: {{ requester }}"""
template_meta = { name = "new_request", language = "id", params = ["{{ id }}", "{{ requester }}"] }
'''


async def test_a_late_refusal_outside_the_window_sends_the_template_once(gateway, tmp_path):
    events = tmp_path / "events.toml"
    events.write_text(EVENTS_WITH_TEMPLATE, encoding="utf-8")
    client, _services, api, _watcher = await gateway(
        "meta", [meta_accepts(1), meta_accepts(2)], META_ENV,
        wa_templates=str(events), raw_env_extra={"WA_CONTACT_BUDI_NUMBER": BUDI},
    )
    answer = await client.post("/notify", json={"event": "new_request", "data": {"id": 42, "requester": "Budi Śantoso"}})
    assert answer.status == 202, await answer.text()
    notification_id = (await answer.json())["id"]
    await wait_for(lambda: _status(client, notification_id, "sent"))
    assert api.requests[0].json()["type"] == "text"

    refusal = meta_status(wamid(1), "failed", int(time.time()), errors=[{
        "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
        "error_data": {"details": "Message failed to send because more than 24 hours have passed"},
    }])
    assert (await post_meta(client, meta_statuses(refusal))).status == 200
    await wait_for(lambda: len(api.requests) == 2, timeout=15)
    template = api.requests[1].json()["template"]
    assert template["name"] == "new_request" and template["language"] == {"code": "id"}
    assert [p["text"] for p in template["components"][0]["parameters"]] == ["42", "Budi Śantoso"]
    assert "Budi Śantoso".encode() in api.requests[1].body

    async def resent():
        found = await (await client.get(f"/notify/{notification_id}")).json()
        return found if [e["status"] for e in found["events"]] == ["queued", "sent", "failed", "queued", "sent"] else None

    found = await wait_for(resent, timeout=15)
    assert found["status"] == "sent" and found["provider_message_id"] == wamid(2)
    assert "sending the template" in found["events"][3]["message"]

    # Meta repeats the refusal: recorded once, nothing sent again
    assert (await post_meta(client, meta_statuses(refusal))).status == 200
    await asyncio.sleep(1.0)
    assert len(api.requests) == 2
