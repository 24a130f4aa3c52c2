"""Status callbacks end to end: POST /notify with a callback URL, the worker sends, the
ledger writer queues one job per status change, the callback sender POSTs it to a
receiver on 127.0.0.1. Every callback is verified as a receiver would: with the
`standardwebhooks` package, and once more by the specification's own recipe (HMAC-SHA256
of `id.timestamp.body`), so the signature is checked by code the sender does not use."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from wa_gateway import __version__
from wa_gateway.callback_sender import PREFETCH
from wa_gateway.commands.dlq import list_dead, replay, table
from wa_gateway.errors import UserError
from wa_gateway.provider import TransientError
from wa_gateway.services import Services
from wa_gateway.store import StoreUnavailable

from ..conftest import BLUEPRINT_TEXT, finish, queue_size, spawn, wait_for


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A calling app's callback endpoint. `statuses` answers the n-th POST of each
    webhook-id (then 200); `script` answers the n-th POST overall (before `statuses`)."""

    def __init__(self, *, statuses: tuple[int, ...] = (), script: tuple[int, ...] = ()) -> None:
        self.statuses = statuses
        self.script = list(script)
        self.received: list[Received] = []
        self.app = web.Application()
        self.app.router.add_post("/hooks/wa", self.take)

    async def take(self, request: web.Request) -> web.Response:
        received = Received(dict(request.headers), await request.read())
        earlier = sum(1 for r in self.received if r.webhook_id == received.webhook_id)
        self.received.append(received)
        if self.script:
            return web.Response(status=self.script.pop(0))
        return web.Response(status=self.statuses[earlier] if earlier < len(self.statuses) else 200)


def verified(secret: str, received: Received) -> dict[str, Any]:
    """The callback's body, after both checks of its signature."""
    body = Webhook(secret).verify(received.body, received.headers)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in received.headers["webhook-signature"].split(" ")
    assert isinstance(body, dict)
    return body


def of_type(secret: str, receiver: Receiver, kind: str, notification_id: str | None = None) -> dict[str, Any] | None:
    """The verified body of the callback of type `kind` the receiver got (of that notification)."""
    for received in receiver.received:
        body = verified(secret, received)
        if body["type"] == kind and notification_id in (None, body["data"]["id"]):
            return body
    return None


def counted(services: Any, outcome: str) -> float:
    return services.metrics.callbacks.labels(outcome)._value.get()


async def post(client: Any, callback_url: str | None = None, text: str = BLUEPRINT_TEXT) -> str:
    payload: dict[str, Any] = {"to": "logistic", "text": text}
    if callback_url is not None:
        payload["callback_url"] = callback_url
    answer = await client.post("/notify", json=payload)
    assert answer.status == 202, await answer.text()
    return str((await answer.json())["id"])


async def status_is(client: Any, notification_id: str, status: str) -> dict[str, Any] | None:
    """The notification once the ledger has `status` as its latest change."""
    body = await (await client.get(f"/notify/{notification_id}")).json()
    last = [e["status"] for e in body.get("events", [])][-1:]
    return body if body.get("status") == status and last == [status] else None


async def test_a_callback_is_signed_and_carries_the_notification_as_get_shows_it(
    make_settings, start_gateway, start_worker, aiohttp_server
):
    secret = new_secret()
    receiver = Receiver()
    url = str((await aiohttp_server(receiver.app)).make_url("/hooks/wa"))
    settings = make_settings(gateway_callback_secret=secret, gateway_callback_url=url)
    client, services = await start_gateway(settings)
    await start_worker(services)

    notification_id = await post(client)  # no callback_url: GATEWAY_CALLBACK_URL's
    sent = await wait_for(lambda: of_type(secret, receiver, "notification.sent"))
    shown = await wait_for(lambda: status_is(client, notification_id, "sent"))

    assert set(sent) == {"type", "timestamp", "data"}
    assert "events" not in sent["data"] and "events" in shown
    assert sent["data"] == {key: shown[key] for key in sent["data"]}  # GET /notify/{id}, without events
    assert sent["data"]["id"] == notification_id and sent["data"]["provider"] == "log"
    assert sent["timestamp"] == shown["events"][-1]["at"] == sent["data"]["updated_at"]
    for received in receiver.received:
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["User-Agent"] == f"wa-gateway/{__version__}"
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert received.headers["webhook-id"].startswith("msg_")
    assert len({r.webhook_id for r in receiver.received}) == len(receiver.received)
    await wait_for(lambda: counted(services, "delivered") == len(receiver.received))


async def test_a_log_provider_send_posts_queued_then_sent(make_settings, start_gateway, start_worker, aiohttp_server):
    secret = new_secret()
    receiver = Receiver()
    url = str((await aiohttp_server(receiver.app)).make_url("/hooks/wa"))
    settings = make_settings(gateway_callback_secret=secret, gateway_callback_url=url)
    client, services = await start_gateway(settings)
    await start_worker(services)

    await post(client)
    await wait_for(lambda: of_type(secret, receiver, "notification.sent"))

    assert [verified(secret, r)["type"] for r in receiver.received] == ["notification.queued", "notification.sent"]


async def test_a_receiver_answering_500_twice_gets_it_again_under_the_same_webhook_id(
    make_settings, start_gateway, start_worker, aiohttp_server, amqp
):
    secret = new_secret()
    receiver = Receiver(statuses=(500, 500))  # each callback: 500, 500, then 200
    url = str((await aiohttp_server(receiver.app)).make_url("/hooks/wa"))
    settings = make_settings(gateway_callback_secret=secret, gateway_callback_hosts=["127.0.0.1"])
    client, services = await start_gateway(settings)
    await start_worker(services)

    await post(client, url)
    await wait_for(lambda: counted(services, "delivered") >= 1 and of_type(secret, receiver, "notification.sent"),
                   timeout=15)
    await wait_for(lambda: counted(services, "delivered") == len({r.webhook_id for r in receiver.received}))

    tries = Counter(r.webhook_id for r in receiver.received)
    assert set(tries.values()) == {3}  # the retry delays are 0.2 and 0.4 s: two tiers, three tries
    for webhook_id in tries:
        copies = [r for r in receiver.received if r.webhook_id == webhook_id]
        assert len({r.body for r in copies}) == 1  # the same bytes every time …
        assert all(verified(secret, r) for r in copies)  # … signed afresh each time
    assert counted(services, "retried") == 2 * len(tries) and counted(services, "dead") == 0
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.callbacks") == 0


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_410_gone_stops_that_notifications_callbacks_to_that_url(
    store, make_settings, start_gateway, start_worker, aiohttp_server, scripted, redis_url, caplog
):
    caplog.set_level(logging.INFO, logger="wa_gateway.callback_sender")
    secret = new_secret()
    receiver = Receiver(script=(410,))
    url = str((await aiohttp_server(receiver.app)).make_url("/hooks/wa"))
    extra = {"redis_url": redis_url} if store == "redis" else {}
    settings = make_settings(
        wa_provider="scripted", gateway_callback_secret=secret, gateway_callback_hosts=["127.0.0.1"], **extra
    )
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [TransientError("busy", provider_status=503)] * 3  # one failed attempt, then sent

    gone = await post(client, url)
    shown = await wait_for(lambda: status_is(client, gone, "sent"), timeout=15)
    assert [e["status"] for e in shown["events"]] == ["queued", "retrying", "sent"]
    # `sent` is its last callback: acked unsent, as every one after the 410 (logged at info)
    await wait_for(lambda: any("(sent) not sent" in r.getMessage() and "410 Gone" in r.getMessage()
                               for r in caplog.records))

    assert len(receiver.received) == 1
    assert verified(secret, receiver.received[0])["type"] != "notification.sent"
    gone_count = counted(services, "gone")
    assert gone_count >= 2  # the 410, then at least `sent`
    # gone is per notification and URL: another notification's callbacks still go there
    other = await post(client, url)
    await wait_for(lambda: of_type(secret, receiver, "notification.sent", other))
    assert {verified(secret, r)["data"]["id"] for r in receiver.received[1:]} == {other}
    assert counted(services, "gone") == gone_count


async def test_a_store_that_is_down_loses_no_callback_it_is_just_sent(
    make_settings, start_gateway, start_worker, aiohttp_server, monkeypatch, amqp
):
    secret = new_secret()
    receiver = Receiver(statuses=(410,))  # every callback says gone; none can be remembered
    url = str((await aiohttp_server(receiver.app)).make_url("/hooks/wa"))
    settings = make_settings(gateway_callback_secret=secret, gateway_callback_url=url)
    client, services = await start_gateway(settings)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the status store (Redis) is unavailable")

    monkeypatch.setattr(services.store, "callback_gone", down)
    monkeypatch.setattr(services.store, "put_callback_gone", down)
    await start_worker(services)

    await post(client)
    await wait_for(lambda: of_type(secret, receiver, "notification.sent"))
    await wait_for(lambda: counted(services, "gone") == len(receiver.received))
    assert len({r.webhook_id for r in receiver.received}) == len(receiver.received)  # each POSTed once
    assert await queue_size(amqp, f"{settings.wa_queue_prefix}.callbacks") == 0


async def test_a_receiver_that_is_down_gets_dead_letters_that_dlq_replay_delivers(
    make_settings, start_gateway, start_worker, aiohttp_server, unused_tcp_port_factory, amqp
):
    secret = new_secret()
    port = unused_tcp_port_factory()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}/hooks/wa"
    settings = make_settings(gateway_callback_secret=secret, gateway_callback_url=url)
    client, services = await start_gateway(settings)
    await start_worker(services)
    dead_queue = f"{settings.wa_queue_prefix}.dead"

    notification_id = await post(client)

    async def all_dead() -> list[tuple[dict[str, Any], bytes]] | None:
        found = await peek(amqp, dead_queue)
        jobs = [json.loads(body) for _, body in found]
        if not any(json.loads(job["body"])["type"] == "notification.sent" for job in jobs):
            return None
        return found if counted(services, "dead") == len(found) else None

    found = await wait_for(all_dead, timeout=15)
    for dead, _ in found:
        assert dead["x-kind"] == "callback" and dead["x-callback-url"] == url
        assert dead["x-attempts"] == 3 and dead["x-first-failed-at"] and dead["x-dead-at"]
        assert dead["x-error"] == f"callback to {url} failed 3 times: connection refused"
    listed = await list_dead(services)
    assert all(m.callback and m.target == "127.0.0.1" and m.attempts == 3 for m in listed)
    assert all(line.split()[1] == "127.0.0.1" for line in table(listed).splitlines()[1:])
    assert len(listed) == len(found) and counted(services, "retried") == 2 * len(found)

    # where callbacks are off, a callback stays dead (it has no queue to go back to)
    callbacks_off = Services(make_settings(), services.plugins, connection_name="callbacks-off")
    with pytest.raises(UserError, match="GATEWAY_CALLBACK_SECRET"):
        await replay(callbacks_off, None, dry_run=False)
    assert await queue_size(amqp, dead_queue) == len(found)

    receiver = Receiver()
    await aiohttp_server(receiver.app, port=port)  # the receiver is up now
    done = await replay(services, None, dry_run=False)

    assert sorted(m.id for m in done) == sorted(m.id for m in listed)
    await wait_for(lambda: counted(services, "delivered") == len(listed), timeout=15)
    assert sorted(r.webhook_id for r in receiver.received) == sorted(m.id for m in listed)
    assert of_type(secret, receiver, "notification.sent", notification_id)
    assert await queue_size(amqp, dead_queue) == 0
    # replaying a callback does not touch the notification: it stays sent
    assert await status_is(client, notification_id, "sent")
    assert (await services.store.get_status(notification_id)).status == "sent"


async def test_an_unreadable_job_is_dead_lettered(make_settings, start_gateway, start_worker, amqp):
    settings = make_settings(gateway_callback_secret=new_secret(), gateway_callback_hosts=["127.0.0.1"])
    _, services = await start_gateway(settings)
    await start_worker(services)

    await services.publisher.publish(b'{"v": 1, "id": "msg_x"}', message_id="msg_x", exchange="",
                                     routing_key=services.topology.callback_queue, headers={"x-kind": "callback"})

    [(headers, body)] = await wait_for(lambda: peek(amqp, services.topology.dead))
    assert body == b'{"v": 1, "id": "msg_x"}'
    assert headers["x-kind"] == "callback" and headers["x-error"].startswith("unreadable callback job: ")
    [listed] = await list_dead(services)
    assert listed.callback and listed.target == "(unreadable callback)"


class HangingReceiver:
    """Accepts connections, reads what comes, never answers."""

    def __init__(self) -> None:
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._hang, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/wa"

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        while await reader.read(65536):
            pass

    async def close(self) -> None:
        for writer in self.connections:
            writer.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def hanging() -> AsyncIterator[HangingReceiver]:
    receiver = HangingReceiver()
    yield receiver
    await receiver.close()


SENDS = 200
SENT_WITHIN = 10.0
"""Seconds for all sends: with the warm-up, well under the 15 s a callback may hang."""


async def _send_all(client: Any, services: Any, count: int = SENDS) -> float:
    started = time.monotonic()
    ids = await asyncio.gather(*(post(client, text=f"#{i}") for i in range(count)))

    async def all_sent() -> bool:
        statuses = await asyncio.gather(*(services.store.get_status(i) for i in ids))
        return all(s is not None and s.status == "sent" for s in statuses)

    await wait_for(all_sent, timeout=SENT_WITHIN, interval=0.1)
    return time.monotonic() - started


async def test_a_hanging_receiver_never_slows_sending(
    make_settings, start_gateway, start_worker, prefix, tmp_path, hanging
):
    plain = make_settings(wa_provider="fake", wa_queue_prefix=f"{prefix}p", wa_log_outbox=str(tmp_path / "p.jsonl"))
    client, services = await start_gateway(plain)
    worker = await start_worker(services)
    await _send_all(client, services, PREFETCH + 8)  # the same warm-up as below
    without = await _send_all(client, services)
    await worker.stop(timeout=2)

    url = await hanging.start()
    settings = make_settings(wa_provider="fake", gateway_callback_secret=new_secret(), gateway_callback_url=url)
    client, services = await start_gateway(settings)
    await start_worker(services)
    await _send_all(client, services, PREFETCH + 8)
    # the sender is full: its prefetch of jobs taken, and a POST hanging for each notification
    # among them (a notification's `queued` and `sent` go one after the other, so between
    # half the prefetch and all of it), and more jobs wait in the queue
    await wait_for(lambda: len(hanging.connections) >= PREFETCH // 2)
    with_hanging = await _send_all(client, services)

    print(f"\n{SENDS} sends: {without:.2f} s with callbacks off, {with_hanging:.2f} s with every "
          f"callback hanging ({len(hanging.connections)} connections held)")
    assert sum(counted(services, o) for o in ("delivered", "retried", "dead", "gone")) == 0  # none done
    assert PREFETCH // 2 <= len(hanging.connections) <= PREFETCH  # never more than its prefetch


BAD_URLS = {
    "ftp": "ftp://127.0.0.1/hooks",
    "host_not_allowed": "https://evil.example.com/hooks",
    "too_long": "https://127.0.0.1/" + "a" * (2049 - len("https://127.0.0.1/")),
    "javascript": "javascript:alert(1)",
    "credentials": "https://user:secret@127.0.0.1/hooks",
}


@pytest.mark.parametrize("name", BAD_URLS)
async def test_a_bad_callback_url_is_a_422_and_nothing_is_queued(name, make_settings, start_gateway, amqp):
    assert len(BAD_URLS["too_long"]) == 2049
    settings = make_settings(gateway_callback_secret=new_secret(), gateway_callback_hosts=["127.0.0.1"])
    client, _ = await start_gateway(settings)

    answer = await client.post(
        "/notify", json={"to": "logistic", "text": "hi", "callback_url": BAD_URLS[name]}
    )

    assert answer.status == 422, await answer.text()
    assert "callback_url" in await answer.text()
    for queue in ("notify", "ledger", "callbacks"):
        assert await queue_size(amqp, f"{settings.wa_queue_prefix}.{queue}") == 0, queue


async def test_a_malformed_callback_secret_stops_serve_with_one_line(process_env):
    process = await spawn("serve", process_env(GATEWAY_CALLBACK_SECRET="whsec_not*base64"))
    code, stderr = await finish(process, sig=None, timeout=30)
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wa-gateway: error: "), stderr
    assert "GATEWAY_CALLBACK_SECRET" in lines[0] and "not*base64" not in lines[0]


async def peek(amqp: Any, queue: str) -> list[tuple[dict[str, Any], bytes]]:
    """The headers and body of every message in `queue`, which stays as it was."""
    channel = await amqp.channel()
    try:
        declared = await channel.get_queue(queue, ensure=False)
        found = []
        while (message := await declared.get(no_ack=False, fail=False)) is not None:
            found.append((dict(message.headers or {}), message.body))
        return found
    finally:
        await channel.close()  # gives back everything unacked


