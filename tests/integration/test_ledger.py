"""The ledger end to end on SQLite: every notification's life, written from RabbitMQ in
batches, read by GET /notify/{id} (with its timeline) and GET /notifications."""

from __future__ import annotations

from tests.conftest import BLUEPRINT_TEXT, wait_for


async def _post(client, text=BLUEPRINT_TEXT, to="logistic"):
    answer = await client.post("/notify", json={"to": to, "text": text})
    assert answer.status == 202, await answer.text()
    return (await answer.json())["id"]


async def _timeline(client, notification_id, status):
    body = await (await client.get(f"/notify/{notification_id}")).json()
    if body.get("status") == status and [e["status"] for e in body.get("events", [])][-1:] == [status]:
        return body
    return None


async def test_a_sent_notification_has_its_row_and_timeline(make_settings, start_gateway, start_worker):
    settings = make_settings()
    client, services = await start_gateway(settings)
    await start_worker(services)

    notification_id = await _post(client)

    body = await wait_for(lambda: _timeline(client, notification_id, "sent"))
    assert [e["status"] for e in body["events"]] == ["queued", "sent"]
    assert body["to"] == "logistic" and body["channel"] == "default"
    assert body["provider"] == "log" and body["provider_message_id"] == f"log-{notification_id}"
    assert body["attempts"] == 1 and body["error"] is None
    listed = await (await client.get("/notifications", params={"status": "sent"})).json()
    assert [n["id"] for n in listed["notifications"]] == [notification_id]
    assert listed["next_cursor"] is None
