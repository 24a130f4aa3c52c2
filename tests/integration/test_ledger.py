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


async def test_retried_dead_and_replayed_the_timeline_tells_each_life(
    make_settings, start_gateway, start_worker, scripted
):
    from wa_gateway.commands.dlq import replay
    from wa_gateway.provider import PermanentError, TransientError

    settings = make_settings(wa_provider="scripted", wa_retry_delays=[0.2])
    client, services = await start_gateway(settings)
    worker = await start_worker(services)
    # three quick tries fail (one attempt), then the retry tier's attempt is refused for good
    scripted.script = [TransientError("busy", provider_status=503)] * 3 + [
        PermanentError("Pesan ditolak: nomor tidak valid ❌", provider_code=131026, provider_status=400)
    ]
    notification_id = await _post(client)
    dead = await wait_for(lambda: _timeline(client, notification_id, "dead"), timeout=15)
    assert [e["status"] for e in dead["events"]] == ["queued", "retrying", "dead"]
    assert dead["error"]["code"] == "131026"
    assert dead["error"]["message"].endswith("Pesan ditolak: nomor tidak valid ❌")
    assert dead["events"][1]["attempt"] == 1 and dead["events"][2]["attempt"] == 2

    await replay(services, {notification_id}, dry_run=False)

    sent = await wait_for(lambda: _timeline(client, notification_id, "sent"), timeout=15)
    assert [e["status"] for e in sent["events"]] == ["queued", "retrying", "dead", "queued", "sent"]
    assert sent["events"][3]["message"] == "replayed from the dead-letter queue"
    assert sent["error"] is None and sent["attempts"] == 1
    await worker.stop(timeout=2)


async def test_the_list_filters_pages_and_refuses_bad_queries(make_settings, start_gateway, start_worker):
    settings = make_settings(gateway_api_keys=["k" * 24])
    client, services = await start_gateway(settings)
    await start_worker(services)
    auth = {"Authorization": "Bearer " + "k" * 24}
    ids = []
    for index in range(5):
        answer = await client.post("/notify", json={"to": "logistic", "text": f"#{index}"}, headers=auth)
        ids.append((await answer.json())["id"])

    async def all_sent():
        page = await (await client.get("/notifications", params={"status": "sent"}, headers=auth)).json()
        return page if len(page["notifications"]) == 5 else None

    await wait_for(all_sent)
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/notifications", params=params, headers=auth)).json()
        seen += [n["id"] for n in page["notifications"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once

    assert (await client.get("/notifications")).status == 401
    for params, fragment in [
        ({"status": "lost"}, "status must be one of"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"since": "yesterday"}, "ISO 8601"),
        ({"since": "2026-11-28T08:00:00"}, "time zone"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"colour": "red"}, "unknown parameter"),
    ]:
        answer = await client.get("/notifications", params=params, headers=auth)
        assert answer.status == 400, params
        body = await answer.json()
        assert body["error"] == "invalid_query" and fragment in body["detail"], body


async def test_with_the_ledger_off_its_queue_gets_no_copies_and_get_answers_from_the_store(
    make_settings, start_gateway, start_worker, amqp, tmp_path
):
    on = make_settings()
    client, services = await start_gateway(on)
    await _post(client)  # no worker: its copy stays in the ledger queue
    await services.broker.close()
    off = make_settings(wa_ledger=False, database_url=f"sqlite:///{tmp_path / 'never.db'}")
    client, services = await start_gateway(off)  # cuts the queue's bindings
    await start_worker(services)

    notification_id = await _post(client)

    async def sent():
        body = await (await client.get(f"/notify/{notification_id}")).json()
        return body if body["status"] == "sent" else None

    body = await wait_for(sent)
    assert body["events"] == [] and body["provider"] == "log"
    assert (await client.get("/notifications")).status == 404
    channel = await amqp.channel()
    queue = await channel.declare_queue(services.topology.ledger_queue, passive=True)
    assert queue.declaration_result.message_count == 1  # only the copy from when it was on
    await channel.close()
    assert not (tmp_path / "never.db").exists()
