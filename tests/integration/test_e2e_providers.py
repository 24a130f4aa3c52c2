"""End to end through each installed provider plugin: POST /notify -> RabbitMQ ->
worker -> the plugin -> a local fake of the provider's API. The UTF-8 text must
arrive byte-exact, and the provider's message id must come back in the status."""

from __future__ import annotations

import base64
import json

import pytest

from wa_gateway.services import Services
from wa_gateway.testing import Answer, FakeProviderApi

from ..conftest import BLUEPRINT_TEXT, LOGISTIC, wait_for

TWILIO_SID = "AC" + "0123456789abcdef" * 2
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
TWILIO_MESSAGE_SID = "SM" + "fedcba9876543210" * 2

CASES = {
    "watzap": {
        "success": Answer(200, {"status": "200", "message": "Successfully", "ack": "successfully"}),
        "env": {"WATZAP_NUMBER_KEY": "number-key"},
        "to": "logistic",
        "path": "/send_message_group",
        "provider_message_id": None,
    },
    "meta": {
        "success": Answer(200, {"messaging_product": "whatsapp", "contacts": [{"input": "+6281234567890", "wa_id": "6281234567890"}],
                             "messages": [{"id": WAMID}]}),
        "env": {"META_PHONE_NUMBER_ID": "106540352242922"},
        "to": "+6281234567890",
        "path": "/106540352242922/messages",
        "provider_message_id": WAMID,
    },
    "twilio": {
        "success": Answer(201, {"sid": TWILIO_MESSAGE_SID, "status": "queued", "to": "whatsapp:+6281234567890"}),
        "env": {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_FROM": "whatsapp:+14155238886"},
        "to": "+6281234567890",
        "path": f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
        "provider_message_id": TWILIO_MESSAGE_SID,
    },
}


def _text_received(name: str, request) -> str:
    if name == "watzap":
        assert request.json()["group_id"] == LOGISTIC
        return request.json()["message"]
    if name == "meta":
        assert request.headers["Authorization"] == "Bearer secret-token"
        assert request.json()["to"] == "+6281234567890"
        return request.json()["text"]["body"]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{TWILIO_SID}:secret-token".encode()).decode()
    assert request.form()["To"] == "whatsapp:+6281234567890"
    return request.form()["Body"]



@pytest.mark.parametrize("name", sorted(CASES))
async def test_post_notify_reaches_the_providers_api_byte_exact(
    name, make_settings, aiohttp_client, start_worker, installed_plugins
):
    from wa_gateway.gateway import make_app

    case = CASES[name]
    async with FakeProviderApi(case["success"]) as api:
        settings = make_settings(
            wa_provider=name, wa_api_key="secret-token", wa_api_url=api.url,
            wa_allow_raw_targets=True, raw_env=case["env"],
        )
        services = Services(settings, installed_plugins)
        client = await aiohttp_client(make_app(services))
        await services.broker.wait_connected(timeout=10)
        worker = await start_worker(services)

        response = await client.post("/notify", json={"to": case["to"], "text": BLUEPRINT_TEXT})
        assert response.status == 202
        notification_id = (await response.json())["id"]

        await wait_for(lambda: api.requests, timeout=15)
        [request] = api.requests
        assert request.method == "POST" and request.path == case["path"]
        assert _text_received(name, request) == BLUEPRINT_TEXT
        if request.content_type == "application/json":
            assert BLUEPRINT_TEXT.encode("utf-8") in request.body.replace(b"\\n", b"\n")

        async def sent():
            body = await (await client.get(f"/notify/{notification_id}")).json()
            return body if body["status"] == "sent" else None

        status = await wait_for(sent, timeout=10)
        assert status["provider"] == name
        assert status.get("provider_message_id") == case["provider_message_id"]
        await worker.stop(timeout=2)


async def test_group_alias_with_twilio_gets_422(make_settings, start_gateway, installed_plugins, aiohttp_client):
    from wa_gateway.gateway import make_app

    settings = make_settings(wa_provider="twilio", wa_api_key="t", raw_env={"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_FROM": "+14155238886"})
    client = await aiohttp_client(make_app(Services(settings, installed_plugins)))

    response = await client.post("/notify", json={"to": "logistic", "text": "hi"})

    assert response.status == 422
    assert "twilio" in json.loads(await response.text())["detail"]
