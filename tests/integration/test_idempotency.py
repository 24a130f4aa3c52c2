"""Idempotency-Key: the same key returns the first answer and sends once, also in a race.
Run against the real Redis (REDIS_URL), which all gateway processes share."""

from __future__ import annotations

import asyncio

import pytest

from ..conftest import outbox_lines, queue_size, wait_for


@pytest.fixture(params=["redis", "memory"])
def store_settings(request, make_settings, redis_url):
    def factory(**overrides):
        if request.param == "redis":
            overrides.setdefault("redis_url", redis_url)
        return make_settings(**overrides)

    return factory


async def test_same_key_returns_the_first_answer_and_queues_once(store_settings, start_gateway, amqp):
    settings = store_settings()
    client, _ = await start_gateway(settings)
    headers = {"Idempotency-Key": "order-42-created"}
    body = {"to": "logistic", "text": "🆕 order 42"}

    first = await client.post("/notify", json=body, headers=headers)
    second = await client.post("/notify", json=body, headers=headers)

    assert first.status == second.status == 202
    assert await first.json() == await second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 1


async def test_two_racing_requests_with_one_key_agree_and_send_once(
    store_settings, start_gateway, start_worker, amqp
):
    settings = store_settings()
    client, services = await start_gateway(settings)
    headers = {"Idempotency-Key": "race-1"}
    body = {"to": "logistic", "text": "race"}

    responses = await asyncio.gather(*(client.post("/notify", json=body, headers=headers) for _ in range(10)))

    answers = [await r.json() for r in responses]
    assert {r.status for r in responses} == {202}
    assert len({a["id"] for a in answers}) == 1
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 1
    await start_worker(services)
    await wait_for(lambda: outbox_lines(settings.wa_log_outbox))
    await asyncio.sleep(0.3)
    assert len(outbox_lines(settings.wa_log_outbox)) == 1


async def test_racing_requests_in_two_gateway_processes_share_redis(make_settings, redis_url, start_gateway, amqp):
    settings = make_settings(redis_url=redis_url)
    client_a, _ = await start_gateway(settings)
    client_b, _ = await start_gateway(settings)  # another gateway: its own memory, same Redis
    headers = {"Idempotency-Key": "two-gateways"}
    body = {"to": "logistic", "text": "once"}

    a, b = await asyncio.gather(
        client_a.post("/notify", json=body, headers=headers), client_b.post("/notify", json=body, headers=headers)
    )

    assert (await a.json())["id"] == (await b.json())["id"]
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 1


async def test_same_key_with_another_body_gets_422(store_settings, start_gateway):
    client, _ = await start_gateway(store_settings())
    headers = {"Idempotency-Key": "k"}
    assert (await client.post("/notify", json={"to": "logistic", "text": "a"}, headers=headers)).status == 202
    reused = await client.post("/notify", json={"to": "logistic", "text": "b"}, headers=headers)
    assert reused.status == 422
    assert (await reused.json())["error"] == "idempotency_key_reused"


async def test_keys_are_scoped_per_api_key(make_settings, redis_url, start_gateway, amqp):
    settings = make_settings(redis_url=redis_url, gateway_api_keys="app-one,app-two")
    client, _ = await start_gateway(settings)
    body = {"to": "logistic", "text": "same key, two apps"}

    one = await client.post("/notify", json=body, headers={"Idempotency-Key": "k", "Authorization": "Bearer app-one"})
    two = await client.post("/notify", json=body, headers={"Idempotency-Key": "k", "Authorization": "Bearer app-two"})

    assert (await one.json())["id"] != (await two.json())["id"]
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 2


async def test_a_failed_first_attempt_frees_the_key_for_the_retry(make_settings, redis_url, start_gateway, amqp):
    from ..tcp_proxy import TcpProxy

    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    settings = make_settings(redis_url=redis_url, amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/", wa_publish_timeout=2)
    client, _ = await start_gateway(settings)
    headers = {"Idempotency-Key": "retry-after-503"}
    body = {"to": "logistic", "text": "x"}
    try:
        await proxy.cut()
        assert (await client.post("/notify", json=body, headers=headers)).status == 503
        await proxy.start()

        async def accepted():
            return (await client.post("/notify", json=body, headers=headers)).status == 202

        await wait_for(accepted, timeout=20, interval=0.3)
    finally:
        await proxy.cut()
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\tkey", "ключ"], ids=["empty", "too-long", "tab", "non-ascii"])
async def test_invalid_idempotency_key_gets_400(make_settings, start_gateway, key):
    client, _ = await start_gateway(make_settings())
    response = await client.post("/notify", json={"to": "logistic", "text": "x"}, headers={"Idempotency-Key": key})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_header"
