"""Templates and media end to end, per provider: POST /notify -> RabbitMQ -> worker ->
the provider plugin -> a local fake of the provider's API, which records every request.

- Outside the 24-hour window (Meta 131047, Twilio 63016 on the send) the event's
  template goes out once, its parameters rendered in order and byte-exact, and the
  timeline's `sent` says so; without a template the dead letter says what to configure.
- Images and documents reach each provider in its own wire format, captions byte-exact.
- What a channel cannot send, and media or templates that are wrong, are 422s at POST
  (or a one-line start-up error for the events file), before anything is queued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from wa_gateway.errors import ConfigError
from wa_gateway.gateway import SERVER_OPTIONS, make_app
from wa_gateway.services import Services
from wa_gateway.testing import Answer, FakeProviderApi

from ..conftest import LOGISTIC, get_all, queue_size, wait_for

BUDI = "+6281234567890"
PHONE_NUMBER_ID = "106540352242922"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_SENDER = "whatsapp:+14155238886"
CONTENT_SID = "HXb5b62575e6e4ff6129ad7c8efe1f983e"
PUBLIC_URL = "https://wa.example.co.id"
REQUESTER = "Budi Śantoso 🙂"
NEW_REQUEST_TEXT = f"🆕 *REQUEST BARU*\nID: 42\nOleh: {REQUESTER}"

EVENTS = """
[new_request]
description = "A new purchase request, to its requester"
to = ["budi"]
fields = { id = "int", requester = "str" }
template = \"\"\"🆕 *REQUEST BARU*
ID: {{ id }}
Oleh: {{ requester }}\"\"\"
template_meta = { name = "permintaan_baru", language = "id", params = ["{{ id }}", "{{ requester }}"] }
template_twilio = { content_sid = "HXb5b62575e6e4ff6129ad7c8efe1f983e", variables = { "1" = "{{ id }}", "2" = "{{ requester }}" } }

[request_reminder]
description = "A reminder with no template"
to = ["budi"]
fields = { id = "int" }
template = "⏰ Permintaan #{{ id }} menunggu persetujuan"
"""

CAPTION = "📎 *PO-42* untuk Budi Śantoso\nTotal: Rp 2.500.000 ✅"
IMAGE_URL = "https://files.example.co.id/foto/barang-42.jpg?v=2&sig=a%2Fb"
DOCUMENT_URL = "https://files.example.co.id/po/PO-42.pdf"
FILENAME = "PO-42 Śantoso.pdf"


def wamid(n: int) -> str:
    return f"wamid.HBgLNjI4MTIzNDU2Nzg5MBUCABIYFjNFQjA{n:04d}"


def twilio_sid(n: int) -> str:
    return f"SM{n:032x}"


def meta_accepts(n: int) -> Answer:
    return Answer(200, {"messaging_product": "whatsapp", "contacts": [{"input": BUDI, "wa_id": BUDI[1:]}],
                        "messages": [{"id": wamid(n)}]})


def twilio_accepts(n: int) -> Answer:
    return Answer(201, {"sid": twilio_sid(n), "status": "queued", "to": f"whatsapp:{BUDI}"})


WATZAP_ACCEPTS = Answer(200, {"status": "200", "message": "Successfully", "ack": "successfully"})

META_REENGAGEMENT = Answer(400, {"error": {
    "message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047,
    "error_data": {"messaging_product": "whatsapp",
                   "details": "Message failed to send because more than 24 hours have passed since the "
                              "customer last replied to this number."},
    "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW",
}})
TWILIO_OUTSIDE_WINDOW = Answer(400, {
    "code": 63016,
    "message": "Failed to send freeform message because you are outside the allowed window. "
               "If you are using WhatsApp, please use a Message Template.",
    "more_info": "https://www.twilio.com/docs/errors/63016", "status": 400,
})

CHANNEL_ENV = {
    "meta": {"META_PHONE_NUMBER_ID": PHONE_NUMBER_ID},
    "twilio": {"TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_FROM": TWILIO_SENDER},
    "watzap": {"WATZAP_NUMBER_KEY": "number-key-0123456789"},
}


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.toml"
    path.write_text(EVENTS, encoding="utf-8")
    return path


@pytest.fixture
async def gateway(make_settings, aiohttp_client, start_worker, installed_plugins, events_file):
    """Start a gateway (and a worker, unless `worker=False`) with one channel `people`
    of `provider` against a fake of its API answering `answers`, then its success."""
    started: list[FakeProviderApi] = []

    async def start(provider: str, answers: list[Answer] = (), *, worker: bool = True, **settings: Any):
        success = {"meta": meta_accepts(99), "twilio": twilio_accepts(99), "watzap": WATZAP_ACCEPTS}[provider]
        api = FakeProviderApi(*answers, default=success)
        await api.__aenter__()
        started.append(api)
        env = {
            "WA_CHANNELS": "people",
            "WA_CHANNEL_PEOPLE_PROVIDER": provider,
            "WA_CHANNEL_PEOPLE_API_KEY": "secret-token-0123456789",
            "WA_CHANNEL_PEOPLE_API_URL": api.url,
            **{f"WA_CHANNEL_PEOPLE_{name}": value for name, value in CHANNEL_ENV[provider].items()},
            "WA_CONTACT_BUDI_NUMBER": BUDI,
        }
        values = make_settings(wa_templates=str(events_file), raw_env=env, **settings)
        services = Services(values, installed_plugins)
        await services.check_ledger()
        client = await aiohttp_client(make_app(services), server_kwargs=dict(SERVER_OPTIONS))
        await services.broker.wait_connected(timeout=10)
        if worker:
            await start_worker(services)
        return client, services, api

    yield start
    for api in started:
        await api.close()


async def post(client, body: dict[str, Any]) -> str:
    answer = await client.post("/notify", json=body)
    assert answer.status == 202, await answer.text()
    return (await answer.json())["id"]


async def status_of(client, notification_id: str, status: str) -> dict[str, Any] | None:
    body = await (await client.get(f"/notify/{notification_id}")).json()
    if body["status"] == status and body["events"] and body["events"][-1]["status"] == status:
        return body
    return None


async def refused(client, body: dict[str, Any]) -> str:
    """The detail of a 422 for `body`."""
    answer = await client.post("/notify", json=body)
    assert answer.status == 422, await answer.text()
    reply = await answer.json()
    assert reply["error"] == "invalid_field"
    return reply["detail"]


# -- outside the 24-hour window ----------------------------------------------------------


async def test_meta_131047_then_the_template_goes_out_once_with_its_params_in_order(gateway):
    client, _services, api = await gateway("meta", [META_REENGAGEMENT, meta_accepts(2)])

    notification_id = await post(client, {"event": "new_request", "data": {"id": 42, "requester": REQUESTER}})

    body = await wait_for(lambda: status_of(client, notification_id, "sent"), timeout=15)
    text, template = api.requests
    assert text.json() == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": BUDI,
        "type": "text", "text": {"body": NEW_REQUEST_TEXT},
    }
    assert template.path == text.path == f"/{PHONE_NUMBER_ID}/messages"
    assert template.headers["Authorization"] == "Bearer secret-token-0123456789"
    assert template.json() == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": BUDI,
        "type": "template",
        "template": {
            "name": "permintaan_baru", "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "42"}, {"type": "text", "text": REQUESTER},
            ]}],
        },
    }
    assert '[{"type": "text", "text": "42"}, {"type": "text", "text": "Budi Śantoso 🙂"}]'.encode() in template.body
    assert body["provider"] == "meta" and body["provider_message_id"] == wamid(2)
    assert [event["status"] for event in body["events"]] == ["queued", "sent"]
    sent = body["events"][-1]
    assert sent["message"] == "sent as template permintaan_baru: the text was refused outside the 24-hour window"
    assert len(api.requests) == 2


async def test_twilio_63016_then_the_content_template_goes_out_once(gateway):
    client, _services, api = await gateway(
        "twilio", [TWILIO_OUTSIDE_WINDOW, twilio_accepts(2)], gateway_public_url=PUBLIC_URL
    )

    notification_id = await post(client, {"event": "new_request", "data": {"id": 42, "requester": REQUESTER}})

    body = await wait_for(lambda: status_of(client, notification_id, "sent"), timeout=15)
    text, template = api.requests
    callback = f"{PUBLIC_URL}/webhooks/people"
    assert text.form() == {"From": TWILIO_SENDER, "To": f"whatsapp:{BUDI}", "Body": NEW_REQUEST_TEXT,
                           "StatusCallback": callback}
    variables = '{"1":"42","2":"Budi Śantoso 🙂"}'
    assert template.form() == {
        "From": TWILIO_SENDER, "To": f"whatsapp:{BUDI}", "ContentSid": CONTENT_SID,
        "ContentVariables": variables, "StatusCallback": callback,
    }
    assert urlencode({"ContentVariables": variables}).encode("ascii") in template.body
    assert json.loads(template.form()["ContentVariables"]) == {"1": "42", "2": REQUESTER}
    assert body["provider"] == "twilio" and body["provider_message_id"] == twilio_sid(2)
    sent = body["events"][-1]
    assert sent["message"] == f"sent as template {CONTENT_SID}: the text was refused outside the 24-hour window"
    assert len(api.requests) == 2


@pytest.mark.parametrize(("provider", "refusal"), [("meta", META_REENGAGEMENT), ("twilio", TWILIO_OUTSIDE_WINDOW)])
async def test_outside_the_window_without_a_template_the_dead_letter_says_what_to_configure(
    gateway, amqp, provider, refusal
):
    client, services, api = await gateway(provider, [refusal])

    notification_id = await post(client, {"event": "request_reminder", "data": {"id": 42}})

    body = await wait_for(lambda: status_of(client, notification_id, "dead"), timeout=15)
    advice = (f"outside the 24-hour window: configure a template for event request_reminder "
              f"(template_{provider} in the events file)")
    assert body["reason"].startswith(advice), body["reason"]
    assert body["error"]["code"] == {"meta": "131047", "twilio": "63016"}[provider]
    [dead] = await wait_for(lambda: get_all(amqp, services.topology.dead))
    assert dead.headers["x-error"].startswith(advice)
    assert len(api.requests) == 1  # the text only: no template to try


async def test_a_template_goes_out_only_once_when_it_is_refused_too(gateway):
    client, _services, api = await gateway("meta", [META_REENGAGEMENT, META_REENGAGEMENT])

    notification_id = await post(client, {"event": "new_request", "data": {"id": 42, "requester": REQUESTER}})

    body = await wait_for(lambda: status_of(client, notification_id, "dead"), timeout=15)
    assert body["error"]["code"] == "131047"
    assert [request.json()["type"] for request in api.requests] == ["text", "template"]


# -- media -------------------------------------------------------------------------------


async def test_meta_document_and_image_by_link_with_captions(gateway):
    client, _services, api = await gateway("meta", [meta_accepts(1), meta_accepts(2)])

    document = await post(client, {"to": "budi", "media": {
        "url": DOCUMENT_URL, "kind": "document", "filename": FILENAME, "caption": CAPTION}})
    image = await post(client, {"to": "budi", "text": CAPTION, "media": {"url": IMAGE_URL, "kind": "image"}})

    for notification_id in (document, image):
        await wait_for(lambda notification_id=notification_id: status_of(client, notification_id, "sent"), timeout=15)
    bodies = sorted((request.json() for request in api.requests), key=lambda body: body["type"])
    envelope = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": BUDI}
    assert bodies == [
        {**envelope, "type": "document", "document": {"link": DOCUMENT_URL, "caption": CAPTION, "filename": FILENAME}},
        {**envelope, "type": "image", "image": {"link": IMAGE_URL, "caption": CAPTION}},
    ]
    for request in api.requests:
        assert json.dumps(CAPTION, ensure_ascii=False).encode() in request.body


async def test_twilio_image_with_its_caption_as_body_and_a_document_alone(gateway):
    client, _services, api = await gateway("twilio", [twilio_accepts(1), twilio_accepts(2)])

    image = await post(client, {"to": "budi", "media": {"url": IMAGE_URL, "kind": "image", "caption": CAPTION}})
    await wait_for(lambda: status_of(client, image, "sent"), timeout=15)
    document = await post(client, {"to": "budi", "media": {"url": DOCUMENT_URL, "kind": "document"}})
    await wait_for(lambda: status_of(client, document, "sent"), timeout=15)

    image_request, document_request = api.requests
    assert image_request.form() == {"From": TWILIO_SENDER, "To": f"whatsapp:{BUDI}", "MediaUrl": IMAGE_URL,
                                    "Body": CAPTION}
    assert urlencode({"Body": CAPTION}).encode("ascii") in image_request.body
    assert document_request.form() == {"From": TWILIO_SENDER, "To": f"whatsapp:{BUDI}", "MediaUrl": DOCUMENT_URL}


async def test_watzap_image_to_a_group_and_a_file_to_a_person(gateway):
    client, _services, api = await gateway("watzap", [WATZAP_ACCEPTS, WATZAP_ACCEPTS])

    image = await post(client, {"to": "logistic", "text": CAPTION, "media": {"url": IMAGE_URL, "kind": "image"}})
    await wait_for(lambda: status_of(client, image, "sent"), timeout=15)
    document = await post(client, {"to": "budi", "media": {"url": DOCUMENT_URL, "kind": "document",
                                                           "filename": FILENAME}})
    await wait_for(lambda: status_of(client, document, "sent"), timeout=15)

    image_request, document_request = api.requests
    keys = {"api_key": "secret-token-0123456789", "number_key": "number-key-0123456789"}
    assert image_request.path == "/send_image_group"
    assert image_request.json() == {**keys, "group_id": LOGISTIC, "url": IMAGE_URL, "message": CAPTION,
                                    "separate_caption": "0"}
    assert json.dumps(CAPTION, ensure_ascii=False).encode() in image_request.body
    assert document_request.path == "/send_file_url"
    assert document_request.json() == {**keys, "phone_no": BUDI[1:], "url": DOCUMENT_URL}


async def test_an_event_with_a_document_takes_the_rendered_text_as_its_caption(gateway):
    client, _services, api = await gateway("meta", [meta_accepts(1)])

    notification_id = await post(client, {"event": "new_request", "data": {"id": 42, "requester": REQUESTER},
                                          "media": {"url": DOCUMENT_URL, "kind": "document", "filename": FILENAME}})

    await wait_for(lambda: status_of(client, notification_id, "sent"), timeout=15)
    [request] = api.requests
    assert request.json()["document"] == {"link": DOCUMENT_URL, "caption": NEW_REQUEST_TEXT, "filename": FILENAME}


# -- refused at POST ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "body", "says"),
    [
        ("twilio", {"to": "budi", "text": "Faktur PO-42", "media": {"url": DOCUMENT_URL, "kind": "document"}},
         "sends a document without text"),
        ("twilio", {"to": "budi", "media": {"url": DOCUMENT_URL, "kind": "document", "caption": "Faktur"}},
         "sends a document without text"),
        ("watzap", {"to": "logistic", "text": "Faktur PO-42", "media": {"url": DOCUMENT_URL, "kind": "document"}},
         "sends a document without text"),
        ("meta", {"to": "budi", "media": {"url": IMAGE_URL, "kind": "image", "caption": "x" * 1025}},
         "(meta) the caption has 1025 characters"),
        ("twilio", {"to": "budi", "text": "x" * 1601, "media": {"url": IMAGE_URL, "kind": "image"}},
         "(twilio) the caption has 1601 characters"),
        ("meta", {"to": "budi", "text": "x", "media": {"url": "http://files.example.co.id/a.pdf", "kind": "document"}},
         "media.url: must be an https:// URL with a host"),
        ("meta", {"to": "budi", "media": {"url": "https://files.example.co.id/" + "a" * 2021, "kind": "image"}},
         "2048 characters"),
        ("meta", {"to": "budi", "media": {"url": IMAGE_URL, "kind": "image", "filename": "foto.jpg"}},
         "'filename' goes with a document"),
        ("meta", {"to": "budi", "media": {"url": IMAGE_URL, "kind": "video"}}, "media.kind"),
        ("meta", {"event": "new_request", "data": {"id": 42, "requester": " "}},
         "template_meta.params[1] of event 'new_request' rendered empty"),
    ],
    ids=["twilio-document-with-text", "twilio-document-with-caption", "watzap-document-with-text",
         "meta-caption-over-1024", "twilio-caption-over-1600", "http-media", "url-of-2049-characters",
         "filename-on-an-image", "unknown-kind", "template-param-renders-empty"],
)
async def test_what_the_channel_cannot_send_is_422_and_nothing_is_queued(gateway, amqp, provider, body, says):
    client, services, api = await gateway(provider, worker=False)

    detail = await refused(client, body)

    assert says in detail
    assert await queue_size(amqp, services.topology.work_queue("people")) == 0
    assert api.requests == []


async def test_http_media_passes_only_with_wa_allow_http_media(gateway):
    client, _services, api = await gateway("meta", [meta_accepts(1)], wa_allow_http_media=True)

    notification_id = await post(client, {"to": "budi", "media": {"url": "http://127.0.0.1:8000/po.pdf",
                                                                  "kind": "document"}})

    await wait_for(lambda: status_of(client, notification_id, "sent"), timeout=15)
    assert api.requests[0].json()["document"] == {"link": "http://127.0.0.1:8000/po.pdf"}


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('template_meta = { name = "Permintaan-Baru", language = "id", params = ["{{ id }}"] }',
         "[new_request] template_meta: name 'Permintaan-Baru' is not a Meta template name"),
        ('template_twilio = { content_sid = "HXb5b62575e6e4ff6129ad7c8efe1f983e", '
         'variables = { "1" = "{{ id }}", "3" = "{{ requester }}" } }',
         "[new_request] template_twilio: variables are named '1', '3': they must be '1', '2', in that order"),
        ('template_watzap = { message = "{{ id }}" }',
         "[new_request] template_watzap: provider 'watzap' sends no templates"),
    ],
    ids=["meta-bad-name", "twilio-variables-1-3", "watzap-has-none"],
)
def test_a_wrong_template_stops_start_up_with_one_line(make_settings, installed_plugins, tmp_path, table, says):
    events = tmp_path / "wrong.toml"
    events.write_text(
        '[new_request]\nto = ["budi"]\nfields = { id = "int", requester = "str" }\n'
        f'template = "Permintaan {{{{ id }}}}"\n{table}\n',
        encoding="utf-8",
    )
    settings = make_settings(wa_templates=str(events), raw_env={
        "WA_CHANNELS": "people", "WA_CHANNEL_PEOPLE_PROVIDER": "meta",
        "WA_CHANNEL_PEOPLE_API_KEY": "secret-token-0123456789",
        "WA_CHANNEL_PEOPLE_META_PHONE_NUMBER_ID": PHONE_NUMBER_ID, "WA_CONTACT_BUDI_NUMBER": BUDI,
    })

    with pytest.raises(ConfigError) as caught:
        Services(settings, installed_plugins)

    message = str(caught.value)
    assert says in message and "\n" not in message
    assert str(events) in message
