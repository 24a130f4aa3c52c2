"""Events: an app names an event and gives data; the gateway renders and routes it."""

from __future__ import annotations

import pytest

from wa_gateway.events import EventCatalog, EventsFileError

from ..conftest import get_all, outbox_lines, wait_for

ALIASES = {
    "logistic": "120363195657916590@g.us",
    "purchase": "120363195657916591@g.us",
    "management": "120363195657916592@g.us",
}


async def test_new_request_event_renders_the_blueprint_text_byte_exact_to_logistic(
    make_settings, start_gateway, start_worker
):
    settings = make_settings(group_aliases=ALIASES)
    client, services = await start_gateway(settings)
    await start_worker(services)

    response = await client.post(
        "/notify", json={"event": "new_request", "data": {"id": 42, "requester": "Budi"}}
    )

    assert response.status == 202
    [line] = await wait_for(lambda: outbox_lines(settings.wa_log_outbox))
    assert line["text"] == "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"
    assert line["to"] == "logistic" and line["target"] == ALIASES["logistic"]
    raw = open(settings.wa_log_outbox, "rb").read()
    assert "🆕 *REQUEST BARU*\\nID: 42\\nOleh: Budi".encode() in raw


async def test_event_with_two_targets_queues_one_message_per_target(make_settings, start_gateway, amqp):
    settings = make_settings(group_aliases=ALIASES)
    client, _ = await start_gateway(settings)

    response = await client.post(
        "/notify",
        json={"event": "budget_exceeded", "data": {"id": 7, "requester": "Sari", "amount": 2500000, "budget": 2000000}},
    )

    answer = await response.json()
    assert response.status == 202 and len(answer["ids"]) == 2 and answer["id"] == answer["ids"][0]
    messages = await get_all(amqp, f"{settings.wa_queue_prefix}.notify")
    assert sorted(m.message_id for m in messages) == sorted(answer["ids"])
    assert "Rp 2.500.000 (anggaran Rp 2.000.000)" in messages[0].body.decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"event": "new_request", "data": {"id": 42}}, "data.requester"),
        ({"event": "new_request", "data": {"id": "42x", "requester": "Budi"}}, "data.id"),
        ({"event": "new_request"}, "data.id"),
        ({"event": "no_such_event", "data": {}}, "known: budget_exceeded, new_request, purchase_approved"),
        ({"event": "new_request", "data": {"id": 1, "requester": "B"}, "text": "x"}, "not both"),
        ({"event": "new_request", "data": "not an object"}, "data"),
    ],
    ids=["missing-field", "wrong-type", "no-data", "unknown-event", "event-and-text", "data-not-object"],
)
async def test_bad_event_request_gets_422_naming_the_problem(make_settings, start_gateway, amqp, body, expected):
    settings = make_settings(group_aliases=ALIASES)
    client, _ = await start_gateway(settings)

    response = await client.post("/notify", json=body)

    assert response.status == 422
    assert expected in (await response.json())["detail"]
    assert await get_all(amqp, f"{settings.wa_queue_prefix}.notify") == []


async def test_event_rendering_over_the_providers_limit_gets_422(make_settings, start_gateway, monkeypatch):
    from wa_gateway.provider import Capabilities

    from ..conftest import ScriptedProvider

    monkeypatch.setattr(ScriptedProvider, "capabilities", Capabilities(groups=True, max_text_length=1600, send_rate=1))
    client, _ = await start_gateway(make_settings(group_aliases=ALIASES, wa_provider="scripted"))

    response = await client.post(
        "/notify", json={"event": "new_request", "data": {"id": 1, "requester": "B" * 1600}}
    )

    assert response.status == 422
    assert "at most 1600" in (await response.json())["detail"]


def test_shipped_events_with_unconfigured_aliases_are_disabled_not_fatal():
    catalog = EventCatalog.load(None, {"logistic": ALIASES["logistic"]})
    assert set(catalog.events) == {"new_request"}
    assert "WA_GROUP_PURCHASE_ID" in catalog.disabled["purchase_approved"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[a]\nto = ["logistic"]\ntemplate = "{{ x "', "template line 1"),
        ('[a]\nto = ["nowhere"]\ntemplate = "hi"', "WA_GROUP_NOWHERE_ID"),
        ('[a]\ntemplate = "hi"', "needs `to`"),
        ('[a]\nto = ["logistic"]', "needs a `template`"),
        ('[a]\nto = ["logistic"]\ntemplate = "hi"\nfields = { id = "uuid" }', "fields must map"),
        ('[a]\nto = ["logistic"]\ntemplate = "hi"\ntypo = 1', "unknown keys: typo"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_broken_events_file_stops_start_up_with_one_line(tmp_path, content, expected):
    path = tmp_path / "events.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EventsFileError) as caught:
        EventCatalog.load(str(path), ALIASES)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_template_sandbox_refuses_attribute_escapes(tmp_path):
    path = tmp_path / "events.toml"
    path.write_text('[evil]\nto = ["logistic"]\ntemplate = "{{ x.__class__.__mro__ }}"', encoding="utf-8")
    event = EventCatalog.load(str(path), ALIASES).get("evil")
    with pytest.raises(ValueError):
        event.render({"x": "a"})
