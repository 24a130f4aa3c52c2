"""The dead-letter queue as an operator uses it: list, replay, purge; and poison
messages that RabbitMQ itself dead-letters at the quorum queue's delivery limit."""

from __future__ import annotations

import asyncio
import os
import sys

from wa_gateway.commands.dlq import list_dead, purge, replay
from wa_gateway.provider import PermanentError
from wa_gateway.topology import DELIVERY_LIMIT

from ..conftest import AMQP_URL, LOGISTIC, get_all, queue_size, wait_for


async def _three_dead(make_settings, start_gateway, start_worker, amqp, scripted):
    settings = make_settings(wa_provider="scripted")
    client, services = await start_gateway(settings)
    worker = await start_worker(services)
    scripted.script = [PermanentError(f"refused {i}", provider_code=100 + i) for i in range(3)]
    ids = []
    for i in range(3):
        response = await client.post("/notify", json={"to": "logistic", "text": f"dead {i}"})
        ids.append((await response.json())["id"])
        await wait_for(lambda expected=i + 1: len(scripted.calls) == expected)
    await wait_for(lambda: _size_is(amqp, f"{settings.wa_queue_prefix}.dead", 3))
    await worker.stop(timeout=2)
    return settings, services, ids


async def _size_is(amqp, name, expected):
    return await queue_size(amqp, name) == expected


async def test_list_shows_reasons_and_leaves_the_queue_as_it_was(make_settings, start_gateway, start_worker, amqp, scripted):
    settings, services, ids = await _three_dead(make_settings, start_gateway, start_worker, amqp, scripted)

    first = await list_dead(services)
    second = await list_dead(services)

    assert [m.id for m in first] == ids == [m.id for m in second]
    assert [m.reason for m in first] == ["refused 0", "refused 1", "refused 2"]
    assert all(m.attempts == 1 and m.target == "logistic" and m.first_failed_at for m in first)
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 3


async def test_replay_one_id_moves_it_back_with_attempts_reset(make_settings, start_gateway, start_worker, amqp, scripted):
    settings, services, ids = await _three_dead(make_settings, start_gateway, start_worker, amqp, scripted)

    done = await replay(services, {ids[1]}, dry_run=False)

    assert [m.id for m in done] == [ids[1]]
    [back] = await get_all(amqp, f"{settings.wa_queue_prefix}.notify")
    assert back.message_id == ids[1]
    assert "x-attempts" not in back.headers and "x-error" not in back.headers
    assert back.headers["x-replayed"] is True
    assert [m.id for m in await list_dead(services)] == [ids[0], ids[2]]


async def test_replay_dry_run_changes_nothing_and_replay_all_delivers_everything(
    make_settings, start_gateway, start_worker, amqp, scripted
):
    settings, services, ids = await _three_dead(make_settings, start_gateway, start_worker, amqp, scripted)

    dry = await replay(services, None, dry_run=True)
    assert [m.id for m in dry] == ids
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 3
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.notify") == 0

    await replay(services, None, dry_run=False)
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0
    await start_worker(services)  # the provider works again (script is empty)
    await wait_for(lambda: len(scripted.calls) == 6)
    assert sorted(m.id for m in scripted.calls[3:]) == sorted(ids)


async def test_purge_empties_the_dead_queue(make_settings, start_gateway, start_worker, amqp, scripted):
    settings, services, _ = await _three_dead(make_settings, start_gateway, start_worker, amqp, scripted)
    assert await purge(services) == 3
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.dead") == 0


async def test_poison_message_lands_in_dead_at_the_delivery_limit(make_settings, start_gateway, amqp):
    settings = make_settings()
    client, services = await start_gateway(settings)
    await client.post("/notify", json={"to": "logistic", "text": "crashes every worker"})
    channel = await amqp.channel()
    queue = await channel.get_queue(f"{settings.wa_queue_prefix}.notify", ensure=False)

    for _ in range(DELIVERY_LIMIT + 1):  # a worker that dies holding it, again and again
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is None:
            break
        await message.nack(requeue=True)

    await wait_for(lambda: _size_is(amqp, f"{settings.wa_queue_prefix}.dead", 1))
    [dead] = await list_dead(services)
    assert "delivery_limit" in dead.reason


async def test_cli_dlq_list_prints_a_table(make_settings, start_gateway, start_worker, amqp, scripted, prefix):
    await _three_dead(make_settings, start_gateway, start_worker, amqp, scripted)
    env = {"PATH": os.environ["PATH"], "AMQP_URL": AMQP_URL, "WA_QUEUE_PREFIX": prefix, "WA_GROUP_LOGISTIC_ID": LOGISTIC}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "dlq", "list",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].split()[:4] == ["id", "target", "attempts", "first"]
    assert len(lines) == 4 and all("refused" in line for line in lines[1:])
