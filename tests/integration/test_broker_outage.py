"""While RabbitMQ is unreachable the gateway answers 503 with Retry-After, and it
recovers by itself when the broker is back: no restart."""

from __future__ import annotations

import time

import pytest

from wa_gateway.broker import Broker
from wa_gateway.topology import Topology, TopologyMismatch

from ..conftest import AMQP_URL, wait_for
from ..tcp_proxy import TcpProxy


@pytest.fixture
async def proxy():
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    yield proxy
    await proxy.cut()


def via(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


async def test_broker_down_gives_503_with_retry_after_then_recovers(make_settings, start_gateway, proxy):
    client, _ = await start_gateway(make_settings(amqp_url=via(proxy), wa_publish_timeout=2))
    assert (await client.post("/notify", json={"to": "logistic", "text": "before"})).status == 202

    await proxy.cut()
    started = time.monotonic()
    down = await client.post("/notify", json={"to": "logistic", "text": "during"})
    assert down.status == 503
    assert down.headers["Retry-After"].isdigit()
    assert (await down.json())["error"] == "unavailable"
    assert time.monotonic() - started < 5
    assert (await client.get("/readyz")).status == 503

    await proxy.start()

    async def accepted():
        response = await client.post("/notify", json={"to": "logistic", "text": "after"})
        return response.status == 202

    await wait_for(accepted, timeout=20, interval=0.3)
    assert (await client.get("/readyz")).status == 200


async def test_gateway_started_before_the_broker_answers_503_then_works(make_settings, start_gateway, proxy):
    await proxy.cut()
    client, _ = await start_gateway(make_settings(amqp_url=via(proxy)), wait_broker=False)

    response = await client.post("/notify", json={"to": "logistic", "text": "early"})
    assert response.status == 503
    assert (await client.get("/healthz")).status == 200

    await proxy.start()

    async def accepted():
        return (await client.post("/notify", json={"to": "logistic", "text": "x"})).status == 202

    await wait_for(accepted, timeout=30, interval=0.3)


async def test_changed_queue_arguments_are_reported_in_one_line_naming_the_argument(prefix, cleanup_topology, amqp):
    channel = await amqp.channel()
    topology = Topology(retry_delays=(5.0,), prefix=prefix)
    older = {**topology.retry_arguments(5.0), "x-message-ttl": 1000}  # as if declared with another delay
    await channel.declare_queue(f"{prefix}.retry.5s", durable=True, arguments=older)
    broker = Broker(AMQP_URL, topology)
    await broker.start()
    try:
        with pytest.raises(TopologyMismatch) as caught:
            await broker.wait_connected(timeout=10)
    finally:
        await broker.close()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{prefix}.retry.5s" in message and "x-message-ttl" in message
