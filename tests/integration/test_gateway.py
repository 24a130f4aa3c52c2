"""POST /notify answers exactly as DESIGN.md says, and bad input never reaches the queue."""

from __future__ import annotations

import json

import pytest

from wa_gateway.provider import Capabilities

from ..conftest import BLUEPRINT_TEXT, LOGISTIC, get_all, queue_size


async def test_valid_request_is_confirmed_in_the_queue_before_202(make_settings, start_gateway, amqp):
    settings = make_settings()
    client, _ = await start_gateway(settings)

    response = await client.post("/notify", json={"to": "logistic", "text": BLUEPRINT_TEXT})

    assert response.status == 202
    answer = await response.json()
    assert answer["status"] == "queued" and len(answer["id"]) == 36
    [message] = await get_all(amqp, f"{settings.wa_queue_prefix}.notify")
    assert message.message_id == answer["id"]
    assert message.delivery_mode == 2  # persistent
    assert message.content_type == "application/json"
    body = json.loads(message.body)
    assert body["v"] == 1 and body["to"] == "logistic"
    assert body["target"] == {"kind": "group", "address": LOGISTIC}
    assert body["text"] == BLUEPRINT_TEXT
    assert BLUEPRINT_TEXT.encode("utf-8") in message.body.replace(b"\\n", b"\n")


async def test_a_message_no_queue_would_take_is_a_503_never_a_202(make_settings, start_gateway, amqp):
    """The work queue deleted under a running gateway (ledger off, so nothing else is
    bound): RabbitMQ returns the mandatory message, and the caller is told to retry."""
    settings = make_settings(wa_ledger=False)
    client, _ = await start_gateway(settings)
    channel = await amqp.channel()
    await channel.queue_delete(f"{settings.wa_queue_prefix}.notify")
    await channel.close()

    response = await client.post("/notify", json={"to": "logistic", "text": "hilang?"})

    assert response.status == 503
    body = await response.json()
    assert body["error"] == "unavailable", body
    assert "no queue is bound" in body["detail"] and "nothing was queued" in body["detail"]


async def test_status_of_a_queued_message_is_queued_and_unknown_id_is_404(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    answer = await (await client.post("/notify", json={"to": "logistic", "text": "hi"})).json()

    status = await client.get(f"/notify/{answer['id']}")
    assert status.status == 200
    assert (await status.json())["status"] == "queued"
    missing = await client.get("/notify/00000000-0000-0000-0000-000000000000")
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"


BAD_REQUESTS = [
    pytest.param({"data": b'{"to": "logistic", "text": '}, 400, "invalid_json", id="truncated-json"),
    pytest.param({"data": b"\xff\xfe{}"}, 400, "invalid_json", id="invalid-utf8"),
    pytest.param({"data": b"[" * 5000 + b"]" * 5000}, 400, "invalid_json", id="deep-nesting"),
    pytest.param({"data": b"[1, 2]"}, 422, "invalid_field", id="not-an-object"),
    pytest.param({"json": {"to": "logistic"}}, 422, "invalid_field", id="missing-text"),
    pytest.param({"json": {"to": "logistic", "text": ""}}, 422, "invalid_field", id="empty-text"),
    pytest.param({"json": {"to": "logistic", "text": "   \n "}}, 422, "invalid_field", id="blank-text"),
    pytest.param({"json": {"to": "logistic", "text": "x" * 4097}}, 422, "invalid_field", id="text-too-long"),
    pytest.param({"json": {"to": "logistic", "text": 42}}, 422, "invalid_field", id="text-not-string"),
    pytest.param({"json": {"to": None, "text": "hi"}}, 422, "invalid_field", id="null-to"),
    pytest.param({"json": {"to": "nobody", "text": "hi"}}, 422, "invalid_field", id="unknown-alias"),
    pytest.param({"json": {"to": "+6281234567890", "text": "hi"}}, 422, "invalid_field", id="raw-number-not-allowed"),
    pytest.param({"json": {"to": "logistic", "text": "hi", "x": 1}}, 422, "invalid_field", id="unknown-field"),
    pytest.param({"json": {"to": "logistic", "text": "a\u0000b"}}, 422, "invalid_field", id="nul-in-text"),
    pytest.param({"data": b'{"to":"logistic","text":"hi"}', "headers": {"Content-Type": "text/plain"}},
                 415, "unsupported_media_type", id="text-plain"),
    pytest.param({"data": b'{"to":"logistic","text":"hi"}', "headers": {"Content-Type": "application/json; charset=latin-1"}},
                 415, "unsupported_media_type", id="latin1-charset"),
    pytest.param({"data": b"x" * (64 * 1024 + 1), "headers": {"Content-Type": "application/json"}},
                 413, "body_too_large", id="body-over-64KiB"),
]


@pytest.mark.parametrize(("request_kwargs", "status", "code"), BAD_REQUESTS)
async def test_bad_request_gets_json_4xx_and_nothing_is_queued(
    make_settings, start_gateway, amqp, request_kwargs, status, code
):
    settings = make_settings()
    client, _ = await start_gateway(settings)
    kwargs = dict(request_kwargs)
    if "data" in kwargs:
        kwargs.setdefault("headers", {"Content-Type": "application/json"})

    response = await client.post("/notify", **kwargs)

    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code and body["detail"]
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 0


async def test_text_of_4096_characters_with_emoji_is_accepted(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    text = ("🆕" * 4096)
    response = await client.post("/notify", json={"to": "logistic", "text": text})
    assert response.status == 202


async def test_unknown_alias_error_lists_the_known_aliases(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    body = await (await client.post("/notify", json={"to": "nobody", "text": "hi"})).json()
    assert "nobody" in body["detail"] and "logistic" in body["detail"]


async def test_raw_targets_when_allowed_are_normalised_and_garbage_is_422(make_settings, start_gateway, amqp):
    settings = make_settings(wa_allow_raw_targets=True)
    client, _ = await start_gateway(settings)

    for raw in ("+62 812-3456-7890", "0812 3456 7890"):
        assert (await client.post("/notify", json={"to": raw, "text": "hi"})).status == 202
    group = await client.post("/notify", json={"to": "120363000000000001@g.us", "text": "hi"})
    assert group.status == 202
    for garbage in ("12", "+62abc", "not-a-number", "x@g.us"):
        response = await client.post("/notify", json={"to": garbage, "text": "hi"})
        assert response.status == 422, garbage

    targets = [json.loads(m.body)["target"] for m in await get_all(amqp, f"{settings.wa_queue_prefix}.notify")]
    assert targets == [
        {"kind": "phone", "address": "+6281234567890"},
        {"kind": "phone", "address": "+6281234567890"},
        {"kind": "group", "address": "120363000000000001@g.us"},
    ]


async def test_group_alias_with_a_provider_without_groups_gets_422(make_settings, start_gateway, plugins, monkeypatch):
    from ..conftest import ScriptedProvider

    monkeypatch.setattr(ScriptedProvider, "capabilities", Capabilities(groups=False, max_text_length=1600, send_rate=1))
    client, _ = await start_gateway(make_settings(wa_provider="scripted"))

    group = await client.post("/notify", json={"to": "logistic", "text": "hi"})
    assert group.status == 422
    assert "cannot send to WhatsApp groups" in (await group.json())["detail"]


async def test_text_over_the_providers_limit_gets_422(make_settings, start_gateway, monkeypatch):
    from ..conftest import ScriptedProvider

    monkeypatch.setattr(ScriptedProvider, "capabilities", Capabilities(groups=True, max_text_length=1600, send_rate=1))
    client, _ = await start_gateway(make_settings(wa_provider="scripted"))

    ok = await client.post("/notify", json={"to": "logistic", "text": "x" * 1600})
    too_long = await client.post("/notify", json={"to": "logistic", "text": "x" * 1601})
    assert ok.status == 202
    assert too_long.status == 422
    assert "at most 1600" in (await too_long.json())["detail"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic c2VjcmV0", "Bearer", "bearer  "],
    ids=["missing", "wrong-key", "basic-scheme", "empty-bearer", "blank"],
)
async def test_bad_or_missing_api_key_gets_401(make_settings, start_gateway, amqp, authorization):
    settings = make_settings(gateway_api_keys="secret-one,secret-two")
    client, _ = await start_gateway(settings)
    headers = {"Authorization": authorization} if authorization else {}

    response = await client.post("/notify", json={"to": "logistic", "text": "hi"}, headers=headers)

    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 0


async def test_any_configured_api_key_is_accepted(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings(gateway_api_keys="secret-one,secret-two"))
    for key in ("secret-one", "secret-two"):
        response = await client.post(
            "/notify", json={"to": "logistic", "text": "hi"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status == 202
    assert (await client.get("/healthz")).status == 200  # probes stay open


async def test_unknown_route_and_wrong_method_answer_json(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    missing = await client.get("/nope")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    wrong = await client.delete("/notify")
    assert wrong.status == 405 and (await wrong.json())["error"] == "method_not_allowed"


async def test_healthz_and_readyz(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "ready" and body["broker"] == "connected" and body["provider"] == "log"


async def test_api_key_over_its_rate_limit_gets_429_with_retry_after_and_others_keep_going(
    make_settings, start_gateway, amqp
):
    settings = make_settings(gateway_api_keys="busy,quiet", gateway_rate_limit=1, gateway_rate_burst=3)
    client, _ = await start_gateway(settings)
    busy = {"Authorization": "Bearer busy"}

    statuses = [
        (await client.post("/notify", json={"to": "logistic", "text": "x"}, headers=busy)).status
        for _ in range(4)
    ]
    limited = await client.post("/notify", json={"to": "logistic", "text": "x"}, headers=busy)
    quiet = await client.post("/notify", json={"to": "logistic", "text": "x"}, headers={"Authorization": "Bearer quiet"})

    assert statuses == [202, 202, 202, 429]
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"] == "rate_limited"
    assert quiet.status == 202
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 4


async def test_openapi_is_generated_from_the_models(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings(gateway_api_keys="k"))
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    schema = spec["components"]["schemas"]["NotifyRequest"]
    assert schema["properties"]["text"]["anyOf"][0]["maxLength"] == 4096
    responses = spec["paths"]["/notify"]["post"]["responses"]
    assert set(responses) == {"202", "400", "401", "408", "413", "415", "417", "422", "429", "503"}
    assert spec["paths"]["/notify"]["post"]["security"] == [{"bearer": []}]


async def test_metrics_count_requests_by_route_and_show_queue_depth(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    await client.post("/notify", json={"to": "logistic", "text": "x"})
    await client.get("/notify/some-id")

    text = await (await client.get("/metrics")).text()

    assert 'wa_http_requests_total{method="POST",route="/notify",status="202"} 1.0' in text
    assert 'route="/notify/{id}",status="404"' in text
    assert "wa_publish_seconds_count 1.0" in text
    assert "wa_queue_messages{queue=" in text and '.notify"} 1.0' in text
