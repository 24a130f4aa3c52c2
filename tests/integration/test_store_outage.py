"""A Redis outage (issue 9, items 1 and 2) against a real, private redis-server.

What must hold: an outage never consumes a delivery attempt nor dead-letters
anything; the worker goes on sending and logs one line per state change, not one per
message; every status written during the outage lands once Redis is back; the
gateway answers 503 + Retry-After where it needs the store, and never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from wa_gateway.store import StoreUnavailable

from ..conftest import queue_size, wait_for
from ..redis_server import RedisServer


@pytest.fixture
async def private_redis(tmp_path):
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.kill()


async def _post(client, text):
    response = await client.post("/notify", json={"to": "logistic", "text": text})
    assert response.status == 202, await response.text()
    return (await response.json())["id"]


async def test_redis_outage_while_draining_loses_nothing_dead_letters_nothing_and_logs_per_change(
    make_settings, start_gateway, start_worker, scripted, private_redis, amqp, caplog
):
    caplog.set_level(logging.INFO)
    settings = make_settings(wa_provider="scripted", redis_url=private_redis.url, wa_worker_prefetch=16)
    client, services = await start_gateway(settings)
    scripted.script = [0.2] * 300  # the 0.2 s provider
    ids = [await _post(client, f"message {n} 🆕 Śantoso") for n in range(300)]
    await start_worker(services)

    await wait_for(lambda: len(scripted.calls) >= 50, timeout=20)
    await private_redis.shutdown()
    await asyncio.sleep(3)  # the worker keeps draining meanwhile
    sent_during_outage = len(scripted.calls)
    await private_redis.start()

    await wait_for(lambda: len({n.id for n in scripted.calls}) == 300, timeout=60)
    prefix = settings.wa_queue_prefix
    await wait_for(lambda: _queues_empty(amqp, prefix), timeout=20)
    calls = Counter(n.id for n in scripted.calls)
    duplicates = sum(count - 1 for count in calls.values())
    dead = await queue_size(amqp, f"{prefix}.dead")
    print(f"accepted 300, delivered {len(calls)}, lost {300 - len(calls)}, dead {dead}, "
          f"duplicates {duplicates}, sent during the 3 s outage {sent_during_outage - 50}")
    assert set(calls) == set(ids)
    assert dead == 0
    assert duplicates == 0  # one worker: its own memory of recent sends covers the outage
    assert sent_during_outage > 60  # it did not stop sending while Redis was away

    # `nosave`: statuses written before the outage are gone with Redis's memory; those
    # of messages sent during and after it were kept by the worker and written later
    later = {n.id for n in scripted.calls[60:]}

    async def all_sent():
        # in the store itself: GET /notify/{id} may answer from the ledger
        for notification_id in later:
            try:
                status = await services.store.get_status(notification_id)
            except StoreUnavailable:  # the store has not seen Redis back yet
                return False
            if status is None or status.status != "sent":
                return False
        return True

    await wait_for(all_sent, timeout=20)  # statuses kept during the outage were written
    await wait_for(lambda: any("status store (Redis) is back" in r.getMessage() for r in caplog.records))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("status store (Redis) unavailable" in m for m in messages) == 1
    assert sum("status store (Redis) is back" in m for m in messages) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    ours = [r for r in caplog.records if r.name.startswith("wa_gateway")]
    assert len(ours) < 20, [r.getMessage() for r in ours]  # one line per change, not per message
    unchecked = services.metrics.dedup_unchecked._value.get()
    assert unchecked > 0


async def _queues_empty(amqp, prefix):
    names = [f"{prefix}.notify", f"{prefix}.retry.0.2s", f"{prefix}.retry.0.4s"]
    return all([await queue_size(amqp, name) == 0 for name in names])


async def test_gateway_answers_503_with_retry_after_where_it_needs_redis_and_queues_without_it(
    make_settings, start_gateway, private_redis, amqp, caplog
):
    settings = make_settings(redis_url=private_redis.url)
    client, _services = await start_gateway(settings)
    known = await _post(client, "before")
    assert (await client.get("/readyz")).status == 200

    await private_redis.shutdown()

    keyed = await client.post("/notify", json={"to": "logistic", "text": "keyed"},
                              headers={"Idempotency-Key": "outage-1"})
    assert keyed.status == 503 and keyed.headers["Retry-After"].isdigit()
    assert (await keyed.json())["error"] == "unavailable"
    lookup = await client.get(f"/notify/{known}")
    assert lookup.status == 503 and lookup.headers["Retry-After"].isdigit()
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["store"] == "unavailable"
    # a request that needs no store is still queued: the status is simply not written
    unkeyed = await _post(client, "unkeyed during the outage")
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    await private_redis.start()

    await wait_for(lambda: _status_code(client, "/readyz", 200), timeout=10)
    again = await client.post("/notify", json={"to": "logistic", "text": "keyed"},
                              headers={"Idempotency-Key": "outage-1"})
    assert again.status == 202
    after = await _post(client, "after")
    assert (await client.get(f"/notify/{after}")).status == 200
    # `nosave`: what Redis held is gone; an unknown id is a 404, never a 5xx
    assert (await client.get(f"/notify/{unkeyed}")).status == 404


async def _status_code(client, path, expected):
    return (await client.get(path)).status == expected
