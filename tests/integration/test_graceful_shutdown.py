"""SIGTERM on real `wa-gateway serve` / `run` / `worker` processes, with work in flight.

What must hold (DESIGN.md, Commands; issue 6 item 6): the gateway stops accepting
(new connections are refused, or answered 503 - never 500, never a hang), in-flight
publishes finish and their clients get 202, the worker finishes what it holds or gives
it back to the queue, nothing accepted is lost or delivered twice, and the process
exits 0 within WA_SHUTDOWN_TIMEOUT (plus a small margin) without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter

import aiohttp

from wa_gateway.provider import TransientError

from ..conftest import get_all, outbox_lines, queue_size, wait_for
from ..live_gateway import free_port, spawn_live

SHUTDOWN_TIMEOUT = 5.0
MARGIN = 2.0  # interpreter teardown, closing the AMQP connection
BODY = {"to": "logistic", "text": "🆕 *REQUEST BARU*\nID: 42"}


class SlowConfirmProxy:
    """A TCP proxy to RabbitMQ that can hold what the broker sends back (publisher
    confirms included) for `delay` seconds, in order: publishes stay in flight."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.target = (host, port)
        self.delay = 0.0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst, delayed in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, delayed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await pending.get())[1] is not None:
                await asyncio.sleep(max(0.0, item[0] - loop.time()))
                writer.write(item[1])
                await writer.drain()

        deliverer = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                pending.put_nowait((loop.time() + (self.delay if delayed else 0.0), data))
            pending.put_nowait((0.0, None))
            await deliverer
        except (ConnectionError, asyncio.CancelledError):
            deliverer.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def post(http: aiohttp.ClientSession, base: str, timeout: float = 10.0) -> tuple[str, str | None]:
    """('202', id), ('503', None), ('refused', None), ('disconnected', None), ('timeout', None) ..."""
    try:
        async with http.post(f"{base}/notify", json=BODY, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            answer = await response.json(content_type=None)
            return str(response.status), answer.get("id") if response.status == 202 else None
    except aiohttp.ClientConnectorError:
        return "refused", None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError):
        return "disconnected", None
    except TimeoutError:
        return "timeout", None


async def new_connection_post(base: str) -> str:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        return (await post(http, base, timeout=3.0))[0]


def ids_of(messages: list) -> list[str]:
    return [json.loads(m.body)["id"] for m in messages]


def clean(stderr: str) -> bool:
    return "Traceback" not in stderr and "unexpected error" not in stderr


async def test_serve_sigterm_finishes_in_flight_publishes_and_refuses_new_requests(
    process_env, amqp, prefix, tmp_path
):
    proxy = SlowConfirmProxy()
    await proxy.start()
    live = await spawn_live("serve", process_env(AMQP_URL=proxy.url, WA_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
                                                 GATEWAY_RATE_LIMIT="0"), tmp_path / "serve.log", port=free_port())
    work = f"{prefix}.notify"
    try:
        await live.wait_ready()
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as idle:
            warm = await post(http, live.base)  # opens the publisher's channel before confirms slow down
            assert warm[0] == "202", warm
            kept_alive = await post(idle, live.base)  # its connection is idle when the signal comes
            assert kept_alive[0] == "202"
            proxy.delay = 1.5
            in_flight = [asyncio.create_task(post(http, live.base)) for _ in range(20)]
            await wait_for(lambda: _is(queue_size(amqp, work), 22), timeout=10)  # published, confirms held

            signalled = time.monotonic()
            live.process.terminate()
            proxy.delay = 0.0  # confirms already held keep their time; closing is not slowed down
            await live.wait_logged("stopping")
            after_signal = [await new_connection_post(live.base) for _ in range(3)]
            after_signal.append((await post(idle, live.base, timeout=3.0))[0])
            answers = await asyncio.gather(*in_flight)
        code, _ = await live.stop(sig=None)
        elapsed = time.monotonic() - signalled
    finally:
        await live.kill()
        await proxy.close()

    assert [status for status, _ in answers] == ["202"] * 20, answers
    assert set(after_signal) <= {"refused", "disconnected", "503"}, after_signal
    assert code == 0 and elapsed < SHUTDOWN_TIMEOUT + MARGIN, (code, elapsed, live.stderr()[-3000:])
    assert clean(live.stderr()) and "stopped" in live.stderr(), live.stderr()[-3000:]
    queued = ids_of(await get_all(amqp, work))
    accepted = [warm[1], kept_alive[1]] + [i for _, i in answers]
    assert sorted(queued) == sorted(accepted)  # every 202 is in the queue, and nothing else


async def test_run_sigterm_under_load_loses_nothing_and_delivers_nothing_twice(process_env, amqp, prefix, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    live = await spawn_live("run", process_env(
        WA_PROVIDER="fake", WA_FAKE_LATENCY="0.3", WA_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), GATEWAY_RATE_LIMIT="0",
    ), tmp_path / "run.log", port=free_port())
    outcomes: Counter[str] = Counter()
    after_signal: Counter[str] = Counter()
    accepted: list[str] = []
    stop_sending = asyncio.Event()
    signalled: list[float] = []

    async def sender() -> None:
        async with aiohttp.ClientSession() as http:
            while not stop_sending.is_set():
                status, notification_id = await post(http, live.base, timeout=5.0)
                (after_signal if signalled else outcomes)[status] += 1
                if notification_id:
                    accepted.append(notification_id)
                if status != "202":
                    await asyncio.sleep(0.05)

    try:
        await live.wait_ready()
        senders = [asyncio.create_task(sender()) for _ in range(8)]
        await wait_for(lambda: len(accepted) >= 150 and len(outbox_lines(outbox)) >= 20, timeout=20)
        signalled.append(time.monotonic())
        live.process.terminate()
        code, _ = await live.stop(sig=None)
        elapsed = time.monotonic() - signalled[0]
        stop_sending.set()
        await asyncio.gather(*senders)
    finally:
        stop_sending.set()
        await live.kill()

    stderr = live.stderr()
    assert code == 0 and elapsed < SHUTDOWN_TIMEOUT + MARGIN, (code, elapsed, stderr[-3000:])
    assert clean(stderr) and "stopped" in stderr, stderr[-3000:]
    assert "unfinished at shutdown" not in stderr  # a 0.3 s send always fits in the timeout
    assert set(outcomes) == {"202"}, outcomes
    assert set(after_signal) <= {"202", "503", "refused", "disconnected"}, after_signal
    delivered = [line["id"] for line in outbox_lines(outbox)]
    left = ids_of(await get_all(amqp, f"{prefix}.notify"))
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert not set(delivered) & set(left), "a delivered message is still in the queue"
    lost = set(accepted) - set(delivered) - set(left)
    assert not lost, f"{len(lost)} of {len(accepted)} accepted messages are lost"
    extras = (set(delivered) | set(left)) - set(accepted)
    assert len(extras) <= after_signal["disconnected"]  # queued, then the connection dropped before the 202
    assert await queue_size(amqp, f"{prefix}.dead") == 0


async def test_worker_slower_than_the_shutdown_timeout_gives_its_messages_back(
    make_settings, start_gateway, process_env, amqp, prefix, tmp_path
):
    client, _ = await start_gateway(make_settings())
    sent = [(await (await client.post("/notify", json={**BODY, "text": f"slow {i}"})).json())["id"] for i in range(10)]
    work = f"{prefix}.notify"
    outbox = tmp_path / "outbox.jsonl"
    slow = await spawn_live("worker", process_env(WA_PROVIDER="fake", WA_FAKE_LATENCY="30", WA_SHUTDOWN_TIMEOUT="2"),
                            tmp_path / "slow.log")
    try:
        await wait_for(lambda: _is(queue_size(amqp, work), 0), timeout=20)  # all ten held, none acked
        code, elapsed = await slow.stop(timeout=2 + MARGIN + 2)
    finally:
        await slow.kill()

    assert code == 0 and elapsed < 2 + MARGIN, (code, elapsed, slow.stderr()[-3000:])
    assert clean(slow.stderr()), slow.stderr()[-3000:]
    assert "10 messages unfinished at shutdown go back to the queue" in slow.stderr()
    assert outbox_lines(outbox) == []  # none was half-sent, so none can arrive twice
    await wait_for(lambda: _is(queue_size(amqp, work), 10), timeout=10)

    fast = await spawn_live("worker", process_env(WA_PROVIDER="fake"), tmp_path / "fast.log")
    try:
        await wait_for(lambda: len(outbox_lines(outbox)) >= 10, timeout=20)
        code, _ = await fast.stop()
    finally:
        await fast.kill()
    delivered = [line["id"] for line in outbox_lines(outbox)]
    assert sorted(delivered) == sorted(sent)  # each exactly once, none lost
    assert code == 0 and clean(fast.stderr())
    assert await queue_size(amqp, work) == 0


async def test_stop_during_an_in_process_retry_gives_the_message_back_without_sending_again(
    make_settings, start_gateway, start_worker, scripted, amqp, prefix
):
    """tenacity's AttemptManager swallows every exception, CancelledError included: a
    cancel from Worker.stop() must not become one more send (a duplicate, if the
    cancelled one had reached the provider) and an ack after the worker was stopped."""
    client, services = await start_gateway(make_settings(wa_provider="scripted"))
    worker = await start_worker(services)
    scripted.script = [TransientError("blip", provider_status=503), 30.0]  # the retry hangs in the provider
    assert (await client.post("/notify", json=BODY)).status == 202
    await wait_for(lambda: len(scripted.calls) == 2 and scripted.in_flight == 1)

    started = time.monotonic()
    await worker.stop(timeout=0.5)
    stopped_in = time.monotonic() - started
    await asyncio.sleep(1.0)  # time for a third try, if the cancellation were swallowed

    assert stopped_in < 0.5 + MARGIN
    assert len(scripted.calls) == 2, "the worker sent again after it was told to stop"
    await wait_for(lambda: _is(queue_size(amqp, f"{prefix}.notify"), 1), timeout=5)  # given back, not acked


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected

