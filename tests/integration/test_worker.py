"""The worker acks only after the provider accepted; failures go to retry tiers or wa.dead."""

from __future__ import annotations

import json

import aio_pika

from wa_gateway.provider import PermanentError, TransientError

from ..conftest import BLUEPRINT_TEXT, get_all, outbox_lines, queue_size, wait_for


async def post(client, text="hi", to="logistic"):
    response = await client.post("/notify", json={"to": to, "text": text})
    assert response.status == 202, await response.text()
    return (await response.json())["id"]


async def test_blueprint_text_arrives_byte_exact_through_the_log_provider(
    make_settings, start_gateway, start_worker
):
    settings = make_settings()
    client, services = await start_gateway(settings)
    await start_worker(services)

    notification_id = await post(client, BLUEPRINT_TEXT)

    [line] = await wait_for(lambda: outbox_lines(settings.wa_log_outbox))
    assert line["id"] == notification_id
    assert line["text"] == BLUEPRINT_TEXT
    raw = open(settings.wa_log_outbox, "rb").read()
    assert BLUEPRINT_TEXT.encode("utf-8").replace(b"\n", b"\\n") in raw
    status = await wait_for(lambda: _status(client, notification_id, "sent"))
    assert status["provider"] == "log" and status["provider_message_id"] == f"log-{notification_id}"


async def _status(client, notification_id, expected):
    body = await (await client.get(f"/notify/{notification_id}")).json()
    return body if body.get("status") == expected else None


async def test_worker_sends_prefetched_messages_concurrently(make_settings, start_gateway, start_worker, scripted):
    settings = make_settings(wa_provider="scripted", wa_worker_prefetch=16)
    client, services = await start_gateway(settings)
    scripted.script = [0.3] * 16
    for _ in range(16):
        await post(client)

    await start_worker(services)

    await wait_for(lambda: len(scripted.calls) == 16)
    assert scripted.max_in_flight > 8  # they overlapped, not one after another
    await wait_for(lambda: _all_sent(client, [m.id for m in scripted.calls]))


async def _all_sent(client, ids):
    for notification_id in ids:
        if not await _status(client, notification_id, "sent"):
            return False
    return True


async def test_unparseable_message_goes_to_dead_with_its_reason(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(wa_provider="scripted")
    _, services = await start_gateway(settings)
    await start_worker(services)
    channel = await amqp.channel()
    exchange = await channel.get_exchange(f"{settings.wa_queue_prefix}.notify")
    await exchange.publish(
        aio_pika.Message(b"{not json", message_id="garbage-1", delivery_mode=2),
        routing_key=f"{settings.wa_queue_prefix}.notify",
    )

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.dead"))
    [dead] = await get_all(amqp, f"{settings.wa_queue_prefix}.dead")
    assert dead.body == b"{not json"  # body unchanged
    assert dead.message_id == "garbage-1"
    assert dead.headers["x-error"].startswith("unparseable message")
    assert dead.headers["x-attempts"] == 0
    assert scripted.calls == []
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 0


async def test_permanent_error_calls_provider_once_and_dead_letters_with_provider_details(
    make_settings, start_gateway, start_worker, amqp, scripted
):
    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [PermanentError("(#131026) Message undeliverable", provider_status=400, provider_code=131026)]

    notification_id = await post(client, BLUEPRINT_TEXT)

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.dead"))
    [dead] = await get_all(amqp, f"{settings.wa_queue_prefix}.dead")
    assert len(scripted.calls) == 1
    assert json.loads(dead.body)["text"] == BLUEPRINT_TEXT
    assert dead.headers["x-error"] == "(#131026) Message undeliverable"
    assert dead.headers["x-provider"] == "scripted"
    assert dead.headers["x-provider-status"] == 400
    assert dead.headers["x-provider-code"] == "131026"
    assert dead.headers["x-attempts"] == 1
    assert dead.headers["x-first-failed-at"]
    status = await wait_for(lambda: _status(client, notification_id, "dead"))
    assert "131026" in status["reason"]


async def test_transient_error_goes_through_a_retry_tier_and_is_then_delivered(
    make_settings, start_gateway, start_worker, amqp, scripted
):
    settings = make_settings(wa_provider="scripted", wa_breaker_threshold=100)
    client, services = await start_gateway(settings)
    await start_worker(services)
    # three in-process blips, then the message waits in wa.retry.0.2s, then succeeds
    scripted.script = [TransientError("503 from provider", provider_status=503)] * 3

    notification_id = await post(client)

    status = await wait_for(lambda: _status(client, notification_id, "sent"))
    assert len(scripted.calls) == 4
    assert status["attempts"] == 2
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0


async def test_exhausted_retries_end_in_dead_with_attempt_count(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(wa_provider="scripted", wa_retry_delays=[0.1, 0.2], wa_breaker_threshold=100)
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("timeout")] * 9  # 3 deliveries x 3 in-process tries

    await post(client)

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.dead"))
    [dead] = await get_all(amqp, f"{settings.wa_queue_prefix}.dead")
    assert dead.headers["x-attempts"] == 3
    assert dead.headers["x-error"].startswith("retries exhausted after 3 attempts")
    assert len(scripted.calls) == 9


async def test_retry_after_from_provider_picks_a_longer_tier(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(wa_provider="scripted", wa_retry_delays=[0.1, 30.0], wa_breaker_threshold=100)
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("slow down", provider_status=429, retry_after=20)]

    notification_id = await post(client)

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.retry.30s"))
    assert len(scripted.calls) == 1  # no in-process retry for a long retry-after
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.retry.0.1s") == 0
    status = await wait_for(lambda: _status(client, notification_id, "retrying"))
    assert status["attempts"] == 1 and status["next_try_at"] and "slow down" in status["reason"]


async def test_open_breaker_stops_consuming_and_messages_wait_in_the_work_queue(
    make_settings, start_gateway, start_worker, amqp, scripted
):
    settings = make_settings(
        wa_provider="scripted", wa_breaker_threshold=3, wa_breaker_cooldown=60, wa_worker_prefetch=4
    )
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("down")] * 1000

    for _ in range(20):
        await post(client)

    await wait_for(lambda: services.breaker("default").state.value == "open")
    await wait_for(lambda: _settled(amqp, settings.wa_queue_prefix, 20))
    calls = len(scripted.calls)
    assert calls <= 3 + 4 * 3  # threshold, plus what was already in flight
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0


async def _settled(amqp, prefix, total):
    """All messages are either in the work queue or in a retry tier, none held."""
    work = await queue_size(amqp, f"{prefix}.notify")
    retry = sum([await queue_size(amqp, f"{prefix}.retry.{d}s") for d in ("0.2", "0.4")])
    return work + retry == total


async def test_breaker_probe_after_cooldown_resumes_delivery(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(
        wa_provider="scripted", wa_breaker_threshold=2, wa_breaker_cooldown=0.5, wa_worker_prefetch=8
    )
    client, services = await start_gateway(settings)
    worker = await start_worker(services)
    scripted.script = [TransientError("down")] * 2

    ids = [await post(client) for _ in range(5)]

    await wait_for(lambda: _all_sent(client, ids), timeout=20)
    assert services.breaker("default").state.value == "closed"
    await wait_for(lambda: worker.consumer.current_prefetch == 8)  # the probe's prefetch of 1 is over
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0


async def test_redelivered_copy_of_a_sent_message_is_not_sent_again(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    await start_worker(services)
    notification_id = await post(client)
    await wait_for(lambda: _status(client, notification_id, "sent"))
    [original] = scripted.calls

    # the same message again, as after a crash between send and ack
    await services.publisher.publish_notification(original)

    await wait_for(lambda: _settled(amqp, settings.wa_queue_prefix, 0))
    assert len(scripted.calls) == 1


async def test_failing_observer_hook_never_breaks_delivery(make_settings, start_gateway, start_worker, plugins):
    from wa_gateway import hookimpl

    seen = []

    class Observer:
        @hookimpl
        def message_delivered(self, message, receipt):
            seen.append(message.id)
            raise RuntimeError("sentry is down")

    plugins.manager.register(Observer())
    settings = make_settings()
    client, services = await start_gateway(settings)
    await start_worker(services)

    notification_id = await post(client)

    await wait_for(lambda: _status(client, notification_id, "sent"))
    assert seen == [notification_id]
    assert outbox_lines(settings.wa_log_outbox)[0]["id"] == notification_id


async def test_dead_letter_hook_sees_the_message_reason_and_headers(make_settings, start_gateway, start_worker, plugins, scripted):
    from wa_gateway import hookimpl

    seen = []

    class Reporter:
        @hookimpl
        def message_dead_lettered(self, message, reason, headers):
            seen.append((message.id, reason, headers["x-provider-code"]))

    plugins.manager.register(Reporter())
    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [PermanentError("invalid number", provider_code=21211)]

    notification_id = await post(client)

    await wait_for(lambda: seen)
    assert seen == [(notification_id, "invalid number", "21211")]


async def test_message_the_provider_can_never_serve_is_dead_lettered_not_requeued(
    make_settings, start_gateway, start_worker, amqp, scripted, monkeypatch
):
    from wa_gateway.provider import Capabilities

    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    await post(client, to="logistic")  # accepted while the provider could send to groups
    monkeypatch.setattr(scripted, "capabilities",
                        Capabilities(groups=False, max_text_length=4096, send_rate=100))

    await start_worker(services)

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.dead"))
    [dead] = await get_all(amqp, f"{settings.wa_queue_prefix}.dead")
    assert "cannot send to WhatsApp groups" in dead.headers["x-error"]
    assert scripted.calls == []
