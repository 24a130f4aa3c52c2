"""Real processes: a worker killed before it sends loses nothing; SIGTERM/SIGINT stop
cleanly, finishing in-flight work, with exit status 0 and no traceback."""

from __future__ import annotations

import asyncio
import signal
import socket

import aiohttp
import pytest

from ..conftest import finish, outbox_lines, queue_size, spawn, wait_for, wait_ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_worker_killed_before_send_leaves_the_message_in_the_queue(
    make_settings, start_gateway, process_env, amqp, prefix, tmp_path
):
    client, _ = await start_gateway(make_settings())
    answer = await (await client.post("/notify", json={"to": "logistic", "text": "🆕 kill me"})).json()
    work = f"{prefix}.notify"

    slow = await spawn("worker", process_env(WA_PROVIDER="fake", WA_FAKE_LATENCY="60"))
    await wait_for(lambda: _is(queue_size(amqp, work), 0), timeout=20)  # taken, not acked
    slow.kill()
    await slow.wait()

    await wait_for(lambda: _is(queue_size(amqp, work), 1), timeout=10)  # back in the queue
    assert outbox_lines(tmp_path / "outbox.jsonl") == []

    fast = await spawn("worker", process_env(WA_PROVIDER="fake"))
    [line] = await wait_for(lambda: outbox_lines(tmp_path / "outbox.jsonl"), timeout=20)
    assert line["id"] == answer["id"] and line["text"] == "🆕 kill me"
    code, stderr = await finish(fast)
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def _is(awaitable, expected):
    return (await awaitable) == expected


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_delivers_and_stops_cleanly_on_signal(process_env, tmp_path, sig):
    port = free_port()
    process = await spawn("run", process_env(GATEWAY_PORT=str(port)))
    await wait_ready(port)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/notify", json={"to": "logistic", "text": "halo 👋"}) as response:
            assert response.status == 202
    await wait_for(lambda: outbox_lines(tmp_path / "outbox.jsonl"), timeout=10)

    code, stderr = await finish(process, sig)

    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped" in stderr


async def test_sigterm_lets_the_worker_finish_a_send_in_flight(
    make_settings, start_gateway, process_env, amqp, prefix, tmp_path
):
    client, _ = await start_gateway(make_settings())
    answer = await (await client.post("/notify", json={"to": "logistic", "text": "in flight"})).json()
    worker = await spawn("worker", process_env(WA_PROVIDER="fake", WA_FAKE_LATENCY="1.5"))
    await wait_for(lambda: _is(queue_size(amqp, f"{prefix}.notify"), 0), timeout=20)

    code, stderr = await finish(worker)

    assert code == 0, stderr
    assert [line["id"] for line in outbox_lines(tmp_path / "outbox.jsonl")] == [answer["id"]]
    assert await queue_size(amqp, f"{prefix}.notify") == 0


async def test_worker_serves_metrics_and_probes_on_wa_metrics_port(
    make_settings, start_gateway, process_env, tmp_path
):
    client, _ = await start_gateway(make_settings())
    await client.post("/notify", json={"to": "logistic", "text": "count me"})
    port = free_port()
    worker = await spawn("worker", process_env(WA_PROVIDER="fake", WA_METRICS_PORT=str(port)))
    await wait_for(lambda: outbox_lines(tmp_path / "outbox.jsonl"), timeout=20)

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            ready = response.status
        async with http.post(f"http://127.0.0.1:{port}/notify", json={}) as response:
            no_notify_here = response.status

    code, stderr = await finish(worker)
    assert code == 0, stderr
    assert 'wa_messages_sent_total{channel="default",provider="fake"} 1.0' in text
    assert ready == 200
    assert no_notify_here == 404


async def test_two_serve_processes_share_a_port_with_gateway_reuse_port(process_env):
    port = free_port()
    env = process_env(GATEWAY_PORT=str(port), GATEWAY_REUSE_PORT="true")
    first, second = await spawn("serve", env), await spawn("serve", env)
    await wait_ready(port)
    await asyncio.sleep(1)  # the second one would have failed by now if it could not listen

    assert second.returncode is None and first.returncode is None
    for process in (first, second):
        code, stderr = await finish(process)
        assert code == 0, stderr
