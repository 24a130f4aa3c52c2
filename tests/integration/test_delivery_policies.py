"""Pacing per provider and failover to WA_FALLBACK_PROVIDER."""

from __future__ import annotations

import itertools
import time

from wa_gateway.provider import Capabilities, PermanentError, TransientError

from ..conftest import ScriptedProvider, get_all, outbox_lines, queue_size, wait_for


async def _post_many(client, count):
    ids = []
    for i in range(count):
        response = await client.post("/notify", json={"to": "logistic", "text": f"m{i}"})
        assert response.status == 202
        ids.append((await response.json())["id"])
    return ids



async def test_send_rate_paces_all_prefetched_messages(make_settings, start_gateway, start_worker, scripted, monkeypatch):
    times: list[float] = []
    original = ScriptedProvider.send

    async def timed(self, message):
        times.append(time.monotonic())
        return await original(self, message)

    monkeypatch.setattr(ScriptedProvider, "send", timed)
    settings = make_settings(wa_provider="scripted", wa_send_rate=20, wa_worker_prefetch=64)
    client, services = await start_gateway(settings)
    await _post_many(client, 10)

    await start_worker(services)

    await wait_for(lambda: len(times) == 10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.04  # 20/s = one every 50 ms, whatever the prefetch
    assert times[-1] - times[0] > 0.4


async def test_providers_declared_rate_is_the_default_pace(make_settings, start_gateway, start_worker, scripted, monkeypatch):
    monkeypatch.setattr(ScriptedProvider, "capabilities", Capabilities(groups=True, max_text_length=4096, send_rate=10))
    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    await _post_many(client, 4)
    started = time.monotonic()

    await start_worker(services)

    await wait_for(lambda: len(scripted.calls) == 4)
    assert time.monotonic() - started > 0.28  # 3 gaps of 100 ms


async def test_open_breaker_fails_over_to_the_fallback_provider(make_settings, start_gateway, start_worker, scripted, amqp):
    settings = make_settings(wa_provider="scripted", wa_fallback_provider="log", wa_breaker_threshold=2, wa_breaker_cooldown=60)
    client, services = await start_gateway(settings)
    await start_worker(services, fallback="log")
    scripted.script = [TransientError("primary down")] * 100

    ids = await _post_many(client, 6)

    await wait_for(lambda: len(outbox_lines(settings.wa_log_outbox)) == 6, timeout=20)
    assert services.breaker("default").state.value == "open"
    for notification_id in ids:
        status = await (await client.get(f"/notify/{notification_id}")).json()
        assert status["status"] == "sent" and status["provider"] == "log"
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0


async def test_permanent_refusal_is_retried_once_through_the_fallback(make_settings, start_gateway, start_worker, scripted):
    settings = make_settings(wa_provider="scripted", wa_fallback_provider="log")
    client, services = await start_gateway(settings)
    await start_worker(services, fallback="log")
    scripted.script = [PermanentError("number not on this provider", provider_code=131026)]

    [notification_id] = await _post_many(client, 1)

    [line] = await wait_for(lambda: outbox_lines(settings.wa_log_outbox))
    assert line["id"] == notification_id and line["provider"] == "log"
    assert len(scripted.calls) == 1


async def test_fallback_that_cannot_serve_the_target_is_not_used(
    make_settings, start_gateway, start_worker, scripted, amqp, monkeypatch
):
    from wa_gateway.providers.log import LogProvider

    monkeypatch.setattr(LogProvider, "capabilities", Capabilities(groups=False, max_text_length=4096, send_rate=100))
    settings = make_settings(wa_provider="scripted", wa_fallback_provider="log")
    client, services = await start_gateway(settings)
    await start_worker(services, fallback="log")
    scripted.script = [PermanentError("refused")]

    await _post_many(client, 1)  # `logistic` is a group: the fallback can't take it

    await wait_for(lambda: queue_size(amqp, f"{settings.wa_queue_prefix}.dead"))
    [dead] = await get_all(amqp, f"{settings.wa_queue_prefix}.dead")
    assert dead.headers["x-provider"] == "scripted" and dead.headers["x-error"] == "refused"
    assert outbox_lines(settings.wa_log_outbox) == []
