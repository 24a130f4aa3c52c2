"""Channels (issue 11) against the real RabbitMQ, with local fakes of two providers'
APIs (wa_gateway.testing.FakeProviderApi) behind the installed Watzap and Meta plugins:
routing by alias, one work queue per channel, isolation of an open breaker, a fallback
channel, two numbers of one provider, and `dlq replay` back to a channel's own queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wa_gateway.commands.dlq import list_dead, replay
from wa_gateway.plugins import PluginSet
from wa_gateway.resilience import BreakerState
from wa_gateway.testing import Answer, FakeProviderApi, RecordedRequest

from ..conftest import BLUEPRINT_TEXT, LOGISTIC, get_all, queue_size, wait_for

PURCHASE = "120363195657916591@g.us"
BUDI = "+6281234567890"
PHONE_NUMBER_ID = "106540352242922"
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
WATZAP_OK = Answer(200, {"status": "200", "message": "Successfully", "ack": "successfully"})
META_OK = Answer(200, {"messaging_product": "whatsapp", "contacts": [{"input": BUDI, "wa_id": BUDI[1:]}],
                       "messages": [{"id": WAMID}]})
DOWN = Answer(503, "Service Unavailable")
META_UNDELIVERABLE = Answer(400, {"error": {"message": "Message undeliverable", "type": "OAuthException",
                                            "code": 131026, "fbtrace_id": "AbCdEf"}})


@pytest.fixture
def plugins(installed_plugins: PluginSet) -> PluginSet:
    """start_gateway and start_worker use the installed Watzap and Meta plugins here."""
    return installed_plugins


def watzap_channel(name: str, url: str, *, key: str | None = None, rate: float = 100.0) -> dict[str, str]:
    """A Watzap channel's variables; a high send rate, so tests do not wait for pacing
    (Watzap's own is 1/s)."""
    prefix = f"WA_CHANNEL_{name.upper()}_"
    return {
        f"{prefix}PROVIDER": "watzap",
        f"{prefix}API_URL": url,
        f"{prefix}API_KEY": f"api-{key or name}",
        f"{prefix}WATZAP_NUMBER_KEY": f"number-{key or name}",
        f"{prefix}SEND_RATE": str(rate),
    }


def meta_channel(name: str, url: str) -> dict[str, str]:
    prefix = f"WA_CHANNEL_{name.upper()}_"
    return {
        f"{prefix}PROVIDER": "meta",
        f"{prefix}API_URL": url,
        f"{prefix}API_KEY": "meta-token",
        f"{prefix}META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
    }


def groups_and_people(watzap_url: str, meta_url: str, groups: str = "groups", **extra: str) -> dict[str, str]:
    """Groups through Watzap, people through Meta (listed first: a person goes to Meta,
    a group, which Meta cannot serve, to Watzap)."""
    return {
        "WA_CHANNELS": f"people,{groups}",
        **watzap_channel(groups, watzap_url),
        **meta_channel("people", meta_url),
        "WA_GROUP_LOGISTIC_ID": LOGISTIC,
        "WA_CONTACT_BUDI_NUMBER": BUDI,
        **extra,
    }


async def post(client: Any, to: str, text: str) -> str:
    response = await client.post("/notify", json={"to": to, "text": text})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def peek(amqp: Any, queue: str) -> list[str]:
    """Message ids in a queue, which keeps them (read unacked, given back on close)."""
    channel = await amqp.channel()
    try:
        handle = await channel.declare_queue(queue, passive=True)
        ids = []
        while (message := await handle.get(no_ack=False, fail=False)) is not None:
            ids.append(message.message_id)
        return ids
    finally:
        await channel.close()


def watzap_text(request: RecordedRequest) -> str:
    assert request.method == "POST" and request.content_type == "application/json"
    assert BLUEPRINT_TEXT.encode("utf-8") in request.body.replace(b"\\n", b"\n")  # raw UTF-8 on the wire
    return str(request.json()["message"])


@pytest.mark.parametrize("groups", ["groups", "default"])
async def test_group_alias_goes_to_watzap_and_person_alias_to_meta_once_byte_exact(
    groups, make_settings, start_gateway, start_worker, amqp
):
    async with FakeProviderApi(default=WATZAP_OK) as watzap, FakeProviderApi(default=META_OK) as meta:
        settings = make_settings(raw_env=groups_and_people(watzap.url, meta.url, groups))
        client, services = await start_gateway(settings)
        prefix = settings.wa_queue_prefix

        group_id = await post(client, "logistic", BLUEPRINT_TEXT)
        person_id = await post(client, "budi", BLUEPRINT_TEXT)

        # queued in each channel's own work queue; a channel named default keeps <prefix>.notify
        group_queue = f"{prefix}.notify" if groups == "default" else f"{prefix}.notify.groups"
        assert services.topology.work_queue(groups) == group_queue
        assert await peek(amqp, group_queue) == [group_id]
        assert await peek(amqp, f"{prefix}.notify.people") == [person_id]
        if groups != "default":
            assert await queue_size(amqp, f"{prefix}.notify") == 0

        await start_worker(services)
        await wait_for(lambda: len(watzap.requests) >= 1 and len(meta.requests) >= 1, timeout=15)
        await asyncio.sleep(0.5)  # nothing more comes: each exactly once
        [to_group] = watzap.requests
        [to_person] = meta.requests

        assert to_group.path == "/send_message_group"
        assert to_group.json()["group_id"] == LOGISTIC
        assert to_group.json()["number_key"] == f"number-{groups}"
        assert watzap_text(to_group) == BLUEPRINT_TEXT

        assert to_person.path == f"/{PHONE_NUMBER_ID}/messages"
        assert to_person.headers["Authorization"] == "Bearer meta-token"
        assert to_person.json()["to"] == BUDI
        assert to_person.json()["text"]["body"] == BLUEPRINT_TEXT
        assert BLUEPRINT_TEXT.encode("utf-8") in to_person.body.replace(b"\\n", b"\n")

        async def sent(notification_id: str) -> dict[str, Any] | None:
            body = await (await client.get(f"/notify/{notification_id}")).json()
            return body if body["status"] == "sent" else None

        assert (await wait_for(lambda: sent(group_id)))["provider"] == "watzap"
        person = await wait_for(lambda: sent(person_id))
        assert (person["provider"], person["provider_message_id"]) == ("meta", WAMID)
        assert await queue_size(amqp, group_queue) == 0
        assert await queue_size(amqp, f"{prefix}.notify.people") == 0


async def test_an_open_breaker_on_one_channel_does_not_slow_the_other(
    make_settings, start_gateway, start_worker, amqp
):
    async with FakeProviderApi(default=DOWN) as watzap, FakeProviderApi(default=META_OK) as meta:
        settings = make_settings(
            raw_env=groups_and_people(watzap.url, meta.url),
            wa_breaker_threshold=2,
            wa_breaker_cooldown=60,
        )
        client, services = await start_gateway(settings)
        await start_worker(services)

        for i in range(3):
            await post(client, "logistic", f"group {i}")
        await wait_for(lambda: services.breaker("groups").state is BreakerState.OPEN, timeout=15)
        await asyncio.sleep(1)  # sends that had passed the breaker before it opened finish
        watzap_calls = len(watzap.requests)
        assert watzap_calls <= 6  # at most two tries per message

        loop = asyncio.get_running_loop()
        started = loop.time()
        ids = [await post(client, "budi", f"{BLUEPRINT_TEXT} #{i}") for i in range(30)]
        await wait_for(lambda: len(meta.requests) >= 30, timeout=20)
        elapsed = loop.time() - started
        print(f"30 messages on channel people while groups' breaker is open: {elapsed:.2f} s")

        # well inside the open breaker's 60 s cooldown (and Watzap's 1/s pacing would need 30 s)
        assert elapsed < 10, elapsed
        await asyncio.sleep(0.3)
        texts = [request.json()["text"]["body"] for request in meta.requests]
        assert sorted(texts) == sorted(f"{BLUEPRINT_TEXT} #{i}" for i in range(30))  # each once
        assert len(ids) == 30
        assert services.breaker("groups").state is BreakerState.OPEN
        assert services.breaker("people").state is BreakerState.CLOSED
        assert len(watzap.requests) == watzap_calls  # groups stays paused meanwhile

        prefix = settings.wa_queue_prefix
        groups_queues = [f"{prefix}.notify.groups", *services.topology.retry_queues_of("groups")]

        async def groups_waiting() -> int:
            return sum([await queue_size(amqp, name) for name in groups_queues])

        assert await wait_for(lambda: _equals(groups_waiting(), 3))  # the group messages wait, none lost
        assert await queue_size(amqp, f"{prefix}.dead") == 0
        ready = await client.get("/readyz")  # /readyz names each channel's queue and breaker
        detail = await ready.json()
        assert ready.status == 200  # one channel's provider being down is not the gateway's
        assert detail["breakers"]["groups"]["state"] == "open"
        assert detail["breakers"]["people"]["state"] == "closed"
        assert detail["channels"]["people"] == {"provider": "meta", "queue": f"{prefix}.notify.people"}


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


async def test_a_fallback_channel_takes_over_when_the_breaker_opens(
    make_settings, start_gateway, start_worker, amqp
):
    async with FakeProviderApi(default=DOWN) as down, FakeProviderApi(default=WATZAP_OK) as backup:
        env = {
            "WA_CHANNELS": "a,b",
            **watzap_channel("a", down.url),
            **watzap_channel("b", backup.url),
            "WA_CHANNEL_A_FALLBACK": "b",
        }
        settings = make_settings(raw_env=env, wa_breaker_threshold=2, wa_breaker_cooldown=60)
        client, services = await start_gateway(settings)
        prefix = settings.wa_queue_prefix

        ids = [await post(client, "logistic", f"{BLUEPRINT_TEXT} #{i}") for i in range(5)]
        assert await peek(amqp, f"{prefix}.notify.a") == ids  # the first channel that can serve it
        await start_worker(services)
        await wait_for(lambda: len(backup.requests) >= 5, timeout=15)
        await asyncio.sleep(0.5)

        assert services.breaker("a").state is BreakerState.OPEN
        assert services.breaker("b").state is BreakerState.CLOSED
        texts = [watzap_text(request) for request in backup.requests]
        assert sorted(texts) == sorted(f"{BLUEPRINT_TEXT} #{i}" for i in range(5))  # each exactly once
        assert {request.json()["number_key"] for request in backup.requests} == {"number-b"}
        assert {request.json()["number_key"] for request in down.requests} == {"number-a"}
        assert len(down.requests) < 10  # a few tries until the breaker opened, then none

        async def sent(notification_id: str) -> bool:
            body = await (await client.get(f"/notify/{notification_id}")).json()
            return body["status"] == "sent"

        for notification_id in ids:
            await wait_for(lambda notification_id=notification_id: sent(notification_id))
        assert await queue_size(amqp, f"{prefix}.dead") == 0
        assert await queue_size(amqp, f"{prefix}.notify.a") == 0


async def test_two_watzap_channels_each_send_with_their_own_keys(
    make_settings, start_gateway, start_worker
):
    async with FakeProviderApi(default=WATZAP_OK) as watzap:
        env = {
            "WA_CHANNELS": "one,two",
            **watzap_channel("one", watzap.url),
            **watzap_channel("two", watzap.url),
            "WA_GROUP_LOGISTIC_ID": LOGISTIC,
            "WA_GROUP_PURCHASE_ID": PURCHASE,
            "WA_GROUP_LOGISTIC_CHANNEL": "one",
            "WA_GROUP_PURCHASE_CHANNEL": "two",
        }
        settings = make_settings(raw_env=env, group_aliases={"logistic": LOGISTIC, "purchase": PURCHASE})
        client, services = await start_gateway(settings)
        await start_worker(services)

        for round_ in range(2):
            await post(client, "logistic", f"{BLUEPRINT_TEXT} logistic {round_}")
            await post(client, "purchase", f"{BLUEPRINT_TEXT} purchase {round_}")
        await wait_for(lambda: len(watzap.requests) >= 4, timeout=15)
        await asyncio.sleep(0.3)

        seen = sorted(
            (r.json()["group_id"], r.json()["api_key"], r.json()["number_key"], watzap_text(r))
            for r in watzap.requests
        )
        assert seen == sorted(
            [(LOGISTIC, "api-one", "number-one", f"{BLUEPRINT_TEXT} logistic {i}") for i in range(2)]
            + [(PURCHASE, "api-two", "number-two", f"{BLUEPRINT_TEXT} purchase {i}") for i in range(2)]
        )


async def test_dlq_replay_returns_a_message_to_its_own_channels_queue(
    make_settings, start_gateway, start_worker, amqp
):
    async with FakeProviderApi(default=WATZAP_OK) as watzap, FakeProviderApi(default=META_UNDELIVERABLE) as meta:
        settings = make_settings(raw_env=groups_and_people(watzap.url, meta.url))
        client, services = await start_gateway(settings)
        worker = await start_worker(services)
        prefix = settings.wa_queue_prefix

        dead_id = await post(client, "budi", BLUEPRINT_TEXT)
        await wait_for(lambda: _equals(queue_size(amqp, f"{prefix}.dead"), 1))
        await worker.stop(timeout=2)  # nothing consumes the replayed copy

        [dead] = await list_dead(services)
        assert (dead.id, dead.target, dead.channel) == (dead_id, "budi", "people")
        assert "131026" in dead.reason or "undeliverable" in dead.reason.lower()

        [replayed] = await replay(services, None, dry_run=False)

        assert replayed.id == dead_id
        assert await queue_size(amqp, f"{prefix}.dead") == 0
        assert await queue_size(amqp, f"{prefix}.notify") == 0
        assert await queue_size(amqp, f"{prefix}.notify.groups") == 0
        [back] = await get_all(amqp, f"{prefix}.notify.people")
        assert back.message_id == dead_id
        assert back.headers["x-replayed"] is True
        assert "x-channel" not in back.headers and "x-error" not in back.headers
