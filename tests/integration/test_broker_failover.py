"""AMQP_URL with several nodes (issue 16 item 5), against the real RabbitMQ seen
through TCP proxies, one per "node": a process connects to the first that answers,
moves to another when its node goes away, and stays correct across the switch: a
publish whose confirm was lost is a 503, never a 202; an unacked delivery comes back
and is sent; a channel that RabbitMQ refused (nack) gives way to a fresh one.

The real loss of a cluster node, quorum leader and all, is tests/integration/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from wa_gateway.broker import Broker, BrokerRefused, BrokerUnavailable
from wa_gateway.models import Notification, Target
from wa_gateway.publisher import Publisher
from wa_gateway.topology import Topology

from ..conftest import LOGISTIC, wait_for
from ..tcp_proxy import TcpProxy

BODY = {"to": "logistic", "text": "🆕 failover"}


@pytest.fixture
async def nodes():
    """Two "nodes": two proxies in front of the one RabbitMQ."""
    proxies = [TcpProxy("127.0.0.1", 5672), TcpProxy("127.0.0.1", 5672)]
    for proxy in proxies:
        await proxy.start()
    yield proxies
    for proxy in proxies:
        proxy.resume()
        await proxy.cut()


def listing(*proxies: TcpProxy, short: bool = False) -> str:
    if short:  # amqp://guest:guest@h1:p1,h2:p2/
        return "amqp://guest:guest@" + ",".join(f"127.0.0.1:{p.port}" for p in proxies) + "/"
    return ",".join(f"amqp://guest:guest@127.0.0.1:{p.port}/" for p in proxies)


async def _post_until_202(client, timeout: float) -> tuple[list[int], float]:
    """POST until a 202: the statuses seen and the seconds it took."""
    started, statuses = time.monotonic(), []
    while time.monotonic() - started < timeout:
        response = await client.post("/notify", json=BODY)
        statuses.append(response.status)
        if response.status == 202:
            break
        await asyncio.sleep(0.05)
    return statuses, time.monotonic() - started


@pytest.mark.parametrize("short", [False, True], ids=["full-urls", "short-form"])
async def test_connects_to_the_first_node_that_answers(make_settings, start_gateway, nodes, short):
    first, second = nodes
    await first.cut()  # the first node is down when the gateway starts
    client, services = await start_gateway(make_settings(amqp_url=listing(first, second, short=short)))
    assert services.broker.node == f"127.0.0.1:{second.port}"
    assert (await client.post("/notify", json=BODY)).status == 202


async def test_the_gateway_moves_to_another_node_when_its_node_goes_away(make_settings, start_gateway, nodes):
    first, second = nodes
    client, services = await start_gateway(make_settings(amqp_url=listing(first, second), wa_publish_timeout=2))
    assert services.broker.node == f"127.0.0.1:{first.port}"
    assert (await client.post("/notify", json=BODY)).status == 202

    await first.cut()  # and it stays down
    statuses, seconds = await _post_until_202(client, timeout=10)
    print(f"\nnode lost: {len(statuses) - 1} answers of 503 before a 202 {seconds:.2f} s later")
    assert set(statuses) <= {202, 503}
    assert statuses[-1] == 202 and seconds < 5
    assert services.broker.node == f"127.0.0.1:{second.port}"
    assert (await client.get("/readyz")).status == 200


async def test_a_publish_whose_confirm_was_lost_is_a_503_never_a_202(make_settings, start_gateway, nodes):
    first, second = nodes
    client, services = await start_gateway(make_settings(amqp_url=listing(first, second), wa_publish_timeout=5))
    assert (await client.post("/notify", json=BODY)).status == 202

    first.stall()  # the publish goes out, its confirm cannot come back ...
    pending = asyncio.ensure_future(client.post("/notify", json=BODY))
    await asyncio.sleep(0.5)
    assert not pending.done()
    await first.cut()  # ... and the node goes away before it does
    response = await pending
    assert response.status == 503
    assert "may or may not be queued" in (await response.json())["detail"]

    statuses, _ = await _post_until_202(client, timeout=10)
    assert statuses[-1] == 202 and set(statuses) <= {202, 503}
    assert services.broker.node == f"127.0.0.1:{second.port}"


async def test_unacked_deliveries_come_back_after_the_worker_moves_to_another_node(
    make_settings, start_gateway, start_worker, scripted, nodes
):
    first, second = nodes
    settings = make_settings(wa_provider="scripted", amqp_url=listing(first, second), wa_worker_prefetch=4)
    _, services = await start_gateway(settings)
    scripted.script = [0.3] * 40  # each send takes 0.3 s: the worker holds unacked messages
    await start_worker(services)
    ids = []
    for number in range(12):
        notification = Notification(id=f"failover-{number:02d}", to="logistic",
                                    target=Target(kind="group", address=LOGISTIC), text=f"n{number}")
        await services.publisher.publish_notification(notification)
        ids.append(notification.id)
    await wait_for(lambda: len(scripted.calls) >= 2, timeout=10)

    await first.cut()  # the acks of the messages in hand cannot reach RabbitMQ
    await wait_for(lambda: {m.id for m in scripted.calls} >= set(ids), timeout=30, interval=0.1)
    sent = [m.id for m in scripted.calls]
    print(f"\nworker moved: {len(ids)} messages, all sent, {len(sent) - len(set(sent))} sent twice")
    assert services.broker.node == f"127.0.0.1:{second.port}"


async def test_a_refused_publish_gives_the_channel_way_to_a_fresh_one(make_settings, amqp, prefix):
    """A nack (here from a queue that takes nothing) closes the publishing channel, at
    most four times a second: after a quorum queue's leader moved, RabbitMQ 3.10 can
    leave a channel refusing every publish to it for good (broker._Channel)."""
    full = f"{prefix}.full"
    channel = await amqp.channel()
    await channel.declare_queue(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    broker = Broker(make_settings().amqp_url, Topology(prefix=prefix), alarm_probe_interval=0)
    await broker.start()
    publisher = Publisher(broker, timeout=2)
    try:
        await broker.wait_connected(10)
        seen = []
        for number in range(8):
            with pytest.raises(BrokerUnavailable, match="refused the message"):
                await publisher.publish(b"{}", message_id=f"full-{number}", exchange="", routing_key=full)
            seen.append(publisher._channel)
            await asyncio.sleep(0.1)
        fresh = len({id(c) for c in seen})
        assert 2 <= fresh <= 4, fresh  # replaced, but not after every nack
        await channel.declare_queue(f"{prefix}.open")
        await publisher.publish(b"{}", message_id="ok", exchange="", routing_key=f"{prefix}.open")  # still usable
    finally:
        await publisher.close()
        await broker.close()
        await channel.queue_delete(full)
        await channel.queue_delete(f"{prefix}.open")
        await channel.close()


async def test_refused_credentials_on_every_node_are_one_refusal(prefix, nodes):
    first, second = nodes
    url = listing(first, second).replace("guest:guest", "guest:wrong-password")
    broker = Broker(url, Topology(prefix=prefix))
    await broker.start()
    try:
        with pytest.raises(BrokerRefused, match="refused the user name or password"):
            await broker.wait_connected(15, give_up_if_refused=True)
    finally:
        await broker.close()
