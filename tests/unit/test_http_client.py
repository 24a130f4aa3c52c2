"""The provider HTTP client (wa_gateway.http_client) against local servers: the scripted
FakeProviderApi (aiohttp) for the ordinary answers, raw asyncio servers for the bytes an
aiohttp server would never send (chunks, no length, 1xx, cut answers, garbage), and
TLS with a certificate authority made for the test (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web

from wa_gateway.http_client import HttpClient, HttpRequestError, HttpTimeout
from wa_gateway.testing import NEVER, Answer, FakeProviderApi, closed_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def client(**kwargs: object) -> HttpClient:
    options: dict[str, object] = {"user_agent": "wa-gateway-test", "connect_timeout": 2.0, "total_timeout": 5.0}
    options.update(kwargs)
    return HttpClient(**options)  # type: ignore[arg-type]


async def failure(url: str, **options: object) -> HttpRequestError:
    """The error of one POST to `url` by a client made with `options`."""
    http = client(**options)
    try:
        with pytest.raises(HttpRequestError) as caught:
            await http.request("POST", url, body=b"x")
    finally:
        await http.close()
    return caught.value


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server running `handler` per connection; yields its http:// base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answering(*answers: bytes, close: bool = False) -> Handler:
    """A handler that answers successive requests on a connection with `answers`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if not close:
            await reader.read()  # keep it open until the client goes

    return handle


async def test_a_post_goes_out_byte_exact_and_the_connection_is_kept_alive():
    text = '{"text": "Halo Bu Śri 🧾 — pesanan #42"}'.encode()
    async with FakeProviderApi(default=Answer(200, {"ok": "✅"}, headers={"Retry-After": "3"})) as api:
        http = client()
        try:
            answers = [
                await http.request(
                    "POST",
                    f"{api.url}/v23.0/1065/messages?x=1",
                    headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"},
                    body=text,
                )
                for _ in range(3)
            ]
        finally:
            await http.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].body == '{"ok": "✅"}'.encode()
    assert answers[0].headers.get("retry-after") == "3"  # names are case-insensitive
    first = api.requests[0]
    assert (first.method, first.path, dict(first.query)) == ("POST", "/v23.0/1065/messages", {"x": "1"})
    assert first.body == text
    assert first.headers["Authorization"] == "Bearer t0ken"
    assert first.headers["User-Agent"] == "wa-gateway-test"
    assert first.headers["Content-Length"] == str(len(text))
    assert "Accept-Encoding" not in first.headers  # no compressed answers to undo
    assert len({r.peer for r in api.requests}) == 1, "three requests, one connection"


@pytest.mark.parametrize(
    ("answer", "close", "status", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, dunia\r\n0\r\n\r\n",
            False, 200, b"hello, dunia",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsampai ditutup", True, 200, b"sampai ditutup"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            False, 201, b"ok",
        ),
    ],
    ids=["chunked-joined", "no-length-read-until-close", "interim-100-skipped"],
)
async def test_every_framing_of_an_answer_is_read_whole(answer, close, status, body):
    async with raw_server(answering(answer, close=close)) as url:
        http = client()
        try:
            got = await http.request("POST", f"{url}/a", body=b"x")
        finally:
            await http.close()
    assert (got.status, got.body) == (status, body)


async def test_connection_close_and_an_idle_close_by_the_server_mean_a_new_connection():
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"
    kept = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        # the first connection says "close"; the others answer and hang up while idle
        writer.write(closing if connections == 1 else kept)
        await writer.drain()

    async with raw_server(handle) as url:
        http = client()
        try:
            bodies = []
            for _ in range(3):
                bodies.append((await http.request("POST", f"{url}/a", body=b"x")).body)
                await asyncio.sleep(0.05)  # the server's close reaches the idle connection
        finally:
            await http.close()
    assert bodies == [b"a", b"b", b"b"]
    assert connections == 3


async def test_an_idle_connection_is_not_reused_past_the_servers_keep_alive_timeout():
    peers = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            peers.append(writer.get_extra_info("peername"))
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with raw_server(handle) as url:
        http = client()
        try:
            await http.request("POST", f"{url}/a", body=b"x")
            await http.request("POST", f"{url}/a", body=b"x")  # at once: the same connection
            await asyncio.sleep(1.1)  # past timeout=2 less the second kept in hand
            await http.request("POST", f"{url}/a", body=b"x")
        finally:
            await http.close()
    assert peers[0] == peers[1] != peers[2]


async def test_no_more_than_limit_connections_per_origin_the_rest_wait():
    open_now = peak = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            open_now -= 1

    async with raw_server(handle) as url:
        http = client(limit=2)
        try:
            answers = await asyncio.gather(
                *(http.request("POST", f"{url}/a", body=b"x") for _ in range(8))
            )
        finally:
            await http.close()
    assert [a.body for a in answers] == [b"ok"] * 8
    assert peak == 2


async def test_after_a_storm_of_failures_the_pool_has_every_slot_back():
    """Cut, garbage, silent and good answers in a seeded mix, 60 at once through 3
    connections; a slot lost on any failure path would leave the next requests waiting."""
    pick = random.Random(16)
    storming = True

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            fate = pick.choice(["cut", "garbage", "silent", "good", "good"]) if storming else "good"
            if fate == "cut":
                return
            if fate == "garbage":
                writer.write(b"SMTP ready\r\n\r\n")
            elif fate == "silent":
                await asyncio.sleep(1)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(handle) as url:
        http = client(limit=3, total_timeout=0.3)
        try:
            storm = await asyncio.gather(
                *(http.request("POST", f"{url}/a", body=b"x") for _ in range(60)),
                return_exceptions=True,
            )
            storming = False
            calm = await asyncio.wait_for(
                asyncio.gather(*(http.request("POST", f"{url}/a", body=b"x") for _ in range(10))), 3
            )
        finally:
            await http.close()
    kinds = {type(outcome).__name__ for outcome in storm}
    assert kinds == {"HttpResponse", "HttpRequestError", "HttpTimeout"}, kinds
    assert [answer.body for answer in calm] == [b"ok"] * 10


async def test_a_timeout_after_the_request_went_out_says_sent():
    async with FakeProviderApi(default=Answer(delay=NEVER)) as api:
        error = await failure(f"{api.url}/a", total_timeout=0.3)
    assert isinstance(error, HttpTimeout) and error.sent
    assert len(api.requests) == 1


async def test_a_timeout_while_waiting_for_a_free_connection_says_not_sent():
    async with FakeProviderApi(default=Answer(delay=NEVER)) as api:
        http = client(limit=1, total_timeout=0.3)
        try:
            first, second = await asyncio.gather(
                http.request("POST", f"{api.url}/a", body=b"1"),
                http.request("POST", f"{api.url}/a", body=b"2"),
                return_exceptions=True,
            )
        finally:
            await http.close()
    assert isinstance(first, HttpTimeout) and first.sent
    assert isinstance(second, HttpTimeout) and not second.sent
    assert [r.body for r in api.requests] == [b"1"]


async def test_a_refused_connection_says_not_sent():
    error = await failure(f"http://127.0.0.1:{closed_port()}/a")
    assert not error.sent
    assert "refused" in str(error).lower()


async def test_a_tls_handshake_that_never_ends_is_a_connect_timeout_not_sent():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with raw_server(silent) as url:
        error = await failure(url.replace("http://", "https://") + "/a", connect_timeout=0.3)
    assert isinstance(error, HttpTimeout) and not error.sent


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", "closed before the whole answer"),
        (b"SMTP ready\r\n\r\n", "unreadable HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000, "passes 1000 bytes"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n", "headers pass"),
    ],
    ids=["cut", "garbage", "too-large", "huge-headers"],
)
async def test_a_broken_answer_is_an_error_that_says_sent(answer, words):
    async with raw_server(answering(answer, close=True)) as url:
        error = await failure(f"{url}/a", max_answer_bytes=1000)
    assert error.sent
    assert words in str(error)


async def test_a_cancelled_request_gives_its_connection_back():
    async with FakeProviderApi(Answer(delay=NEVER)) as api:
        http = client(limit=1)
        try:
            stuck = asyncio.ensure_future(http.request("POST", f"{api.url}/a", body=b"x"))
            await asyncio.sleep(0.1)
            stuck.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stuck
            answer = await asyncio.wait_for(http.request("POST", f"{api.url}/a", body=b"x"), 2)
        finally:
            await http.close()
    assert answer.status == 200


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("ftp://example.com/a", {}),
        ("http:///a", {}),
        ("http://example.com/a", {"Authorization": "Bearer x\r\nX-Evil: 1"}),
        ("http://example.com/a", {"Authorization": "Bearer ключ"}),
    ],
    ids=["scheme", "no-host", "header-injection", "not-latin-1"],
)
async def test_what_http_cannot_carry_is_a_value_error_before_anything_is_sent(url, headers):
    http = client()
    try:
        with pytest.raises(ValueError):
            await http.request("POST", url, headers=headers, body=b"x")
    finally:
        await http.close()


async def test_https_checks_the_certificate():
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="aman 🔒")

    app = web.Application()
    app.router.add_post("/a", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    trusted, system = client(ssl_context=trusting), client()
    try:
        answer = await trusted.request("POST", f"https://127.0.0.1:{port}/a", body=b"x")
        with pytest.raises(HttpRequestError) as caught:
            await system.request("POST", f"https://127.0.0.1:{port}/a", body=b"x")
    finally:
        await trusted.close()
        await system.close()
        await runner.cleanup()
    assert (answer.status, answer.body.decode()) == (200, "aman 🔒")
    assert not caught.value.sent
    assert "certificate" in str(caught.value).lower()


async def test_a_closed_client_refuses_new_requests():
    http = client()
    await http.close()
    with pytest.raises(HttpRequestError) as caught:
        await http.request("POST", "http://127.0.0.1:1/a")
    assert not caught.value.sent
