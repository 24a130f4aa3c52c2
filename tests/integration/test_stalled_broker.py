"""A broker that stops answering (issue 9, items 3 and 4): a TCP proxy that keeps the
connection open but forwards nothing, and a memory alarm.

What must hold: a publish whose confirm does not come is reported as uncertain, and
the Idempotency-Key stays bound to the same notification id, so that a retry
re-publishes that id and the worker sends it once; and every process exits within
WA_SHUTDOWN_TIMEOUT plus a small margin whatever the broker does, losing nothing.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import aiohttp
import pytest

from wa_gateway.services import Services

from ..conftest import AMQP_URL, outbox_lines, queue_size, wait_for
from ..live_gateway import free_port, spawn_live
from ..tcp_proxy import TcpProxy
from .test_broker_alarms import memory_alarm

SHUTDOWN_TIMEOUT = 3.0
MARGIN = 2.0  # interpreter start-up is not counted; closing sockets and teardown are
BODY = {"to": "logistic", "text": "🆕 *REQUEST BARU*\nID: 42\nOleh: Budi Śantoso"}


@pytest.fixture
async def proxy():
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    yield proxy
    proxy.resume()
    await proxy.cut()


def via(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


async def test_unconfirmed_publish_is_uncertain_and_a_retry_with_the_key_sends_the_same_id_once(
    make_settings, start_gateway, start_worker, scripted, plugins, proxy, redis_url, amqp
):
    settings = make_settings(wa_provider="scripted", amqp_url=via(proxy), wa_publish_timeout=1,
                             redis_url=redis_url)
    client, _ = await start_gateway(settings)
    worker_services = Services(settings.model_copy(update={"amqp_url": AMQP_URL}), plugins)
    await start_worker(worker_services)

    warm = await client.post("/notify", json={"to": "logistic", "text": "warm-up"})
    assert warm.status == 202  # the publishing channel is open, as in a running gateway
    await wait_for(lambda: scripted.calls, timeout=10)

    proxy.stall()
    first = await client.post("/notify", json=BODY, headers={"Idempotency-Key": "po-42"})
    assert first.status == 503 and first.headers["Retry-After"].isdigit()
    detail = (await first.json())["detail"]
    assert "may or may not be queued" in detail and "same Idempotency-Key" in detail
    proxy.resume()  # the held publish reaches RabbitMQ after all, and is sent
    await wait_for(lambda: len(scripted.calls) == 2, timeout=10)

    retry = await client.post("/notify", json=BODY, headers={"Idempotency-Key": "po-42"})
    assert retry.status == 202
    notification_id = (await retry.json())["id"]
    work = f"{settings.wa_queue_prefix}.notify"
    await asyncio.sleep(0.5)
    await wait_for(lambda: _empty(amqp, work), timeout=10)
    assert [n.id for n in scripted.calls[1:]] == [notification_id]  # one id, sent once
    assert scripted.calls[1].text == BODY["text"]
    again = await client.post("/notify", json=BODY, headers={"Idempotency-Key": "po-42"})
    assert (await again.json())["id"] == notification_id and again.headers["Idempotent-Replayed"] == "true"


async def _empty(amqp, queue):
    return await queue_size(amqp, queue) == 0


@pytest.mark.parametrize("command", ["run", "worker"])
async def test_sigterm_with_a_stalled_broker_exits_in_time_and_loses_nothing(
    command, process_env, tmp_path, proxy, amqp
):
    env = process_env(AMQP_URL=via(proxy), WA_PROVIDER="fake", WA_FAKE_LATENCY="1",
                      WA_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), WA_WORKER_PREFETCH="8")
    prefix = env["WA_QUEUE_PREFIX"]
    ids = await _post_direct(env, 12, tmp_path)
    live = await spawn_live(command, env, tmp_path / f"{command}.log", port=free_port())
    await live.wait_logged("worker consuming", timeout=20)
    await asyncio.sleep(0.3)  # it holds a prefetch of messages, each taking 1 s to send

    proxy.stall()
    code, seconds = await live.stop(signal.SIGTERM, timeout=30)

    print(f"{command}: exit {code} after {seconds:.1f} s with WA_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT:g}")
    assert code == 0, live.stderr()[-2000:]
    assert seconds <= SHUTDOWN_TIMEOUT + MARGIN
    assert "Traceback" not in live.stderr()
    proxy.resume()
    await proxy.cut()  # the broker sees the connection close and gives back what it held
    delivered = Counter(line["id"] for line in outbox_lines(tmp_path / "outbox.jsonl"))
    await wait_for(lambda: _held_given_back(amqp, prefix, len(ids) - len(delivered)), timeout=20)
    assert set(delivered) <= set(ids)


async def _held_given_back(amqp, prefix, expected):
    return await queue_size(amqp, f"{prefix}.notify") >= expected


async def _post_direct(env, count, tmp_path):
    """Queue `count` messages through a gateway on the real broker (not the proxy)."""
    port = free_port()
    gateway = await spawn_live("serve", {**env, "AMQP_URL": AMQP_URL}, tmp_path / "serve.log", port=port)
    await gateway.wait_ready()
    async with aiohttp.ClientSession() as http:
        ids = []
        for _ in range(count):
            async with http.post(f"http://127.0.0.1:{port}/notify", json=BODY) as response:
                assert response.status == 202
                ids.append((await response.json())["id"])
    await gateway.stop()
    return ids


async def test_sigterm_during_a_memory_alarm_exits_in_time(process_env, tmp_path):
    env = process_env(WA_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), WA_PROVIDER="fake", WA_FAKE_LATENCY="0.5")
    port = free_port()
    live = await spawn_live("run", env, tmp_path / "run.log", port=port)
    await live.wait_ready()
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.post(f"http://127.0.0.1:{port}/notify", json=BODY) as response:
                assert response.status == 202
        with memory_alarm():
            await live.wait_logged("RabbitMQ blocks publishing", timeout=10)
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
            code, seconds = await live.stop(signal.SIGTERM, timeout=30)
    print(f"run during a memory alarm: exit {code} after {seconds:.1f} s")
    assert code == 0 and seconds <= SHUTDOWN_TIMEOUT + MARGIN
    assert "Traceback" not in live.stderr()
