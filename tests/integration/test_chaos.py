"""No loss under faults, against the real RabbitMQ: a broker restart under load, a
worker SIGKILLed mid-drain, a provider outage during a burst.

These stop the shared RabbitMQ or kill processes, so they are marked `slow`; they
still run in `make test`, one after another, and always restart what they stopped.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from wa_gateway.models import Notification, Target
from wa_gateway.provider import TransientError

from ..conftest import (
    LOGISTIC,
    ScriptedProvider,
    finish,
    outbox_lines,
    queue_size,
    sbin_tool,
    spawn,
    wait_for,
)

pytestmark = pytest.mark.slow


def rabbitmqctl(*args: str) -> None:
    subprocess.run([sbin_tool("rabbitmqctl"), "-q", *args], check=True, timeout=120, capture_output=True)


async def _poster(client, results, stop, rate=50):
    """Post at `rate`/s until stopped, recording (status, seconds, id)."""
    interval = 1 / rate
    next_at = time.monotonic()
    counter = 0
    posting: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        counter += 1
        task = asyncio.create_task(_post_one(client, results, f"msg {counter} 🆕"))
        posting.add(task)
        task.add_done_callback(posting.discard)
        next_at += interval
        await asyncio.sleep(max(0, next_at - time.monotonic()))


async def _post_one(client, results, text):
    started = time.monotonic()
    response = await client.post("/notify", json={"to": "logistic", "text": text})
    body = await response.json()
    results.append((response.status, time.monotonic() - started, body.get("id")))


async def test_broker_restart_under_load_loses_no_accepted_message(make_settings, start_gateway, start_worker, amqp):
    settings = make_settings(wa_publish_timeout=3, wa_retry_delays=[0.5, 1, 2])
    client, services = await start_gateway(settings)
    await start_worker(services)
    results: list = []
    stop = asyncio.Event()
    poster = asyncio.create_task(_poster(client, results, stop))
    try:
        await asyncio.sleep(2)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.sleep(3)
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await asyncio.sleep(8)  # gateway and worker reconnect by themselves
    stop.set()
    await poster
    await wait_for(lambda: len(results) >= 10, timeout=10)
    await asyncio.sleep(4)  # let the last requests answer

    statuses = {status for status, _, _ in results}
    accepted = {notification_id for status, _, notification_id in results if status == 202}
    assert statuses <= {202, 503}, statuses
    assert 503 in statuses  # the outage was seen
    assert max(seconds for _, seconds, _ in results) < 5
    assert any(s == 202 for s, _, _ in results[-20:])  # recovered without a restart

    async def all_delivered():
        delivered = {line["id"] for line in outbox_lines(settings.wa_log_outbox)}
        return accepted <= delivered

    await wait_for(all_delivered, timeout=60, interval=0.5)
    delivered = [line["id"] for line in outbox_lines(settings.wa_log_outbox)]
    print(
        f"\nbroker restart: {len(results)} requests, {len(accepted)} accepted, "
        f"{sum(1 for s, _, _ in results if s == 503)} got 503, {len(delivered) - len(set(delivered))} duplicates, 0 lost"
    )


async def test_worker_sigkilled_mid_drain_loses_nothing(make_settings, start_gateway, process_env, amqp, prefix, tmp_path):
    settings = make_settings()
    _, services = await start_gateway(settings)
    total = 2000
    ids = []
    for start in range(0, total, 200):
        batch = [
            Notification(id=f"drain-{i:05d}", to="logistic", target=Target(kind="group", address=LOGISTIC), text=f"n{i}")
            for i in range(start, start + 200)
        ]
        await asyncio.gather(*(services.publisher.publish_notification(n) for n in batch))
        ids += [n.id for n in batch]
    outbox = tmp_path / "outbox.jsonl"
    env = process_env(WA_PROVIDER="fake", WA_FAKE_LATENCY="0.005", WA_WORKER_PREFETCH="64")

    first = await spawn("worker", env)
    await wait_for(lambda: len(outbox_lines(outbox)) >= 400, timeout=60)
    first.kill()
    await first.wait()
    sent_before_kill = len(outbox_lines(outbox))
    assert sent_before_kill < total  # it really died mid-drain

    second = await spawn("worker", env)
    await wait_for(lambda: len({line["id"] for line in outbox_lines(outbox)}) == total, timeout=120, interval=0.2)
    code, stderr = await finish(second)
    assert code == 0, stderr

    delivered = [line["id"] for line in outbox_lines(outbox)]
    duplicates = len(delivered) - len(set(delivered))
    assert set(delivered) == set(ids)
    assert duplicates <= 64
    assert await queue_size(amqp, f"{prefix}.notify") == 0
    print(f"\nSIGKILL mid-drain: {total} messages, killed after {sent_before_kill}, 0 lost, {duplicates} duplicates")


async def test_provider_outage_during_a_burst_dead_letters_nothing_and_bounds_calls(
    make_settings, start_gateway, start_worker, amqp, monkeypatch
):
    calls_while_down = 0
    down = True
    original = ScriptedProvider.send

    async def flaky(self, message):
        nonlocal calls_while_down
        if down:
            calls_while_down += 1
            raise TransientError("503 Service Unavailable", provider_status=503)
        return await original(self, message)

    monkeypatch.setattr(ScriptedProvider, "send", flaky)
    ScriptedProvider.calls = []
    threshold, prefetch, cooldown, outage = 5, 16, 0.5, 4.0
    settings = make_settings(
        wa_provider="scripted", wa_worker_prefetch=prefetch, wa_breaker_threshold=threshold,
        wa_breaker_cooldown=cooldown, wa_retry_delays=[0.5, 1, 2, 4, 8],
    )
    client, services = await start_gateway(settings)
    await start_worker(services)

    ids = []
    for i in range(200):
        response = await client.post("/notify", json={"to": "logistic", "text": f"burst {i}"})
        ids.append((await response.json())["id"])
    await asyncio.sleep(outage)
    down = False

    await wait_for(lambda: len({m.id for m in ScriptedProvider.calls}) == 200, timeout=90, interval=0.2)
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0
    bound = threshold + prefetch + outage / cooldown + 2
    assert calls_while_down <= bound, (calls_while_down, bound)
    print(f"\nprovider outage {outage} s: 200 messages, {calls_while_down} provider calls while down (bound {bound:.0f}), 0 dead")
