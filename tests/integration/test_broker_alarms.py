"""RabbitMQ resource alarms (issue 9, item 3) on the real broker, set with rabbitmqctl.

What must hold: a blocked connection is known at once (/readyz 503, POST 503 without
publishing, so nothing refused is delivered later), and the alarm's end is noticed
by itself. The original memory watermark and disk limit are restored even when a
test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

import pytest

from wa_gateway.broker import Broker

from ..conftest import queue_size, sbin_tool, topology_of, wait_for

BODY = {"to": "logistic", "text": "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi"}


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run([sbin_tool("rabbitmqctl"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.contextmanager
def memory_alarm():
    original = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    rabbitmqctl("set_vm_memory_high_watermark", "0.00001")
    try:
        yield
    finally:
        if original.startswith("{absolute,"):
            rabbitmqctl("set_vm_memory_high_watermark", "absolute", original.strip("{}").split(",")[1])
        else:
            rabbitmqctl("set_vm_memory_high_watermark", original)


@contextlib.contextmanager
def disk_alarm():
    original = rabbitmqctl("eval", "rabbit_disk_monitor:get_disk_free_limit().")
    rabbitmqctl("set_disk_free_limit", str(10**18))  # more free disk than any machine has
    try:
        yield
    finally:
        rabbitmqctl("set_disk_free_limit", original)


async def _ready(client) -> bool:
    return (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("alarm", [memory_alarm, disk_alarm], ids=["memory", "disk"])
async def test_alarm_gives_503_at_once_and_nothing_refused_is_delivered_later(
    alarm, make_settings, start_gateway, amqp, redis_url
):
    settings = make_settings(redis_url=redis_url, wa_publish_timeout=5)
    client, services = await start_gateway(settings)
    work = f"{settings.wa_queue_prefix}.notify"
    assert (await client.post("/notify", json=BODY)).status == 202

    with alarm():
        await wait_for(lambda: services.broker.blocked, timeout=5)  # known without a request
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["broker"].startswith("blocked")
        answers = []
        for n in range(10):
            started = time.monotonic()
            headers = {"Idempotency-Key": f"alarm-{n}"} if n % 2 else {}
            response = await client.post("/notify", json=BODY, headers=headers)
            answers.append((response.status, time.monotonic() - started, await response.json()))
        assert all(status == 503 for status, _, _ in answers), answers
        assert max(seconds for _, seconds, _ in answers) < 1  # not the 5 s confirm timeout
        assert all("nothing was queued" in body["detail"] for _, _, body in answers)

    await wait_for(lambda: _ready(client), timeout=20)
    await asyncio.sleep(0.5)  # anything that slipped through would be routed by now
    assert await queue_size(amqp, work) == 1  # only the message from before the alarm
    retried = await client.post("/notify", json=BODY, headers={"Idempotency-Key": "alarm-1"})
    assert retried.status == 202
    assert await queue_size(amqp, work) == 2


async def test_blocked_state_is_read_from_aiormq(make_settings):
    """Broker.blocked reads an aiormq attribute that is not public: fail loudly if it moves."""
    settings = make_settings()
    broker = Broker(settings.amqp_url, topology_of(settings), alarm_probe_interval=0)
    await broker.start()
    try:
        await broker.wait_connected(timeout=10)
        amqp = broker.connection.transport.connection  # type: ignore[union-attr]
        assert isinstance(getattr(amqp, "_Connection__connection_unblocked", None), asyncio.Event)
        assert broker.blocked is False
    finally:
        await broker.close()

