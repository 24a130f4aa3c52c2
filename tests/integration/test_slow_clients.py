"""Slow and greedy clients against a real `wa-gateway serve` (uvloop, as in production):
request-head and keep-alive deadlines, GATEWAY_MAX_CONNECTIONS, file descriptors.

Clients here are raw sockets, so the test controls every byte and its timing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wa_gateway.http_server import FD_MARGIN, FdWatch, raise_fd_limit

from ..live_gateway import Live, free_port

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
async def serve(process_env: Callable[..., dict[str, str]], tmp_path: Path) -> AsyncIterator[Any]:
    """Start `wa-gateway serve` with some settings (and optionally a hard file-descriptor
    limit), wait until it is ready; killed at the end of the test."""
    started: list[Live] = []

    async def start(*, nofile: int | None = None, **settings: str) -> Live:
        port = free_port()
        env = process_env(GATEWAY_PORT=str(port), **settings)
        command = [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "serve"]
        if nofile is not None:  # lower the limits in the child itself, then exec the command
            command = [sys.executable, "-c", (
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
                "os.execv(sys.executable, sys.argv[1:])"
            ), *command]
        log = tmp_path / f"serve-{port}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
            )
        live = Live(process, log, port)
        started.append(live)
        await live.wait_ready()
        await get(port)  # the readiness client's connections are closed by now
        return live

    yield start
    for live in started:
        await live.kill()


async def get(port: int, path: str = "/healthz") -> bytes:
    """One request on a fresh connection; the whole answer up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response on a kept-alive connection (head + Content-Length body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection within `timeout` without answering."""
    try:
        data = await asyncio.wait_for(reader.read(1024), timeout)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    assert data == b"", f"the server answered instead of closing: {data[:80]!r}"
    return True


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.5) -> int:
    """Send `data` one byte every `every` seconds; the number of bytes the server took
    before it closed the connection."""
    for sent, byte in enumerate(data):
        if writer.is_closing():
            return sent
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return sent
        await asyncio.sleep(every)
    return len(data)


def log_lines(live: Live, needle: str) -> list[str]:
    return [line for line in live.stderr().splitlines() if needle in line]


# --- (1) the request-head deadline ------------------------------------------------------


async def test_a_client_trickling_its_request_head_is_cut_off_while_others_are_answered(serve):
    live = await serve(GATEWAY_HEADER_TIMEOUT="1", GATEWAY_KEEPALIVE_TIMEOUT="30")
    loop = asyncio.get_running_loop()

    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    started = loop.time()
    sending = asyncio.create_task(trickle(writer, HEAD))
    assert (await get(live.port)).startswith(b"HTTP/1.1 200")  # others are served meanwhile
    assert await closed_by_server(reader, timeout=5)
    assert loop.time() - started >= 0.9
    writer.close()
    assert await sending < len(HEAD)  # cut off before the head was complete

    # On a kept-alive connection: the idle time is the keep-alive timeout's, not the
    # head's; the head deadline runs from the first byte of the next request.
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(HEAD)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(1.5)  # idle longer than GATEWAY_HEADER_TIMEOUT
    writer.write(HEAD)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    started = loop.time()
    sending = asyncio.create_task(trickle(writer, HEAD))
    assert await closed_by_server(reader, timeout=5)
    assert loop.time() - started >= 0.9
    writer.close()
    assert await sending < len(HEAD)


# --- (2) keep-alive ------------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(serve):
    live = await serve(GATEWAY_KEEPALIVE_TIMEOUT="1", GATEWAY_HEADER_TIMEOUT="30")
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(HEAD)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.3)  # within the timeout the connection is reused
    writer.write(HEAD)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    answered = loop.time()
    assert await closed_by_server(reader, timeout=5)
    assert loop.time() - answered >= 0.9
    writer.close()


# --- (3) GATEWAY_MAX_CONNECTIONS -----------------------------------------------------------


async def test_connections_over_the_limit_are_refused_and_served_again_once_slow_ones_time_out(serve):
    live = await serve(
        GATEWAY_MAX_CONNECTIONS="20", GATEWAY_HEADER_TIMEOUT="2", GATEWAY_KEEPALIVE_TIMEOUT="30"
    )
    slow = [await asyncio.open_connection("127.0.0.1", live.port) for _ in range(40)]
    for _, writer in slow:
        writer.write(b"G")  # the start of a head that never comes

    async def answer(reader: asyncio.StreamReader) -> bytes:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(reader.read(1024), 1)
        return b""  # still open, waiting for the rest of its head
    # (a refused connection lingers until the client closes: no reset destroys the 503)

    answers = await asyncio.gather(*(answer(reader) for reader, _ in slow))
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 20, answers
    assert all(a == b"" for a in answers if a not in refused)
    assert b"Connection: close" in refused[0] and b'"error": "unavailable"' in refused[0]
    assert (await get(live.port)).startswith(b"HTTP/1.1 503")  # a good client too, for now

    # The 20 slow connections that were let in are cut off by GATEWAY_HEADER_TIMEOUT ...
    kept = [reader for (reader, _), a in zip(slow, answers, strict=True) if a == b""]
    assert all(await asyncio.gather(*(closed_by_server(reader, timeout=5) for reader in kept)))
    for _, writer in slow:
        writer.close()
    # ... after which the gateway serves again
    await live.wait_logged("accepting connections again")
    assert (await get(live.port)).startswith(b"HTTP/1.1 200")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{live.base}/notify", json={"to": "logistic", "text": "halo"}) as response,
    ):
        assert response.status == 202
    code, _ = await live.stop()
    assert code == 0
    assert "Traceback" not in live.stderr()
    assert len(log_lines(live, "refusing new connections")) == 1, live.stderr()
    [back] = log_lines(live, "accepting connections again")
    assert "21 refused" in json.loads(back)["event"]


# --- (4) file descriptors ------------------------------------------------------------------


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one(caplog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 300:
        pytest.skip(f"needs a finite hard limit above 300 (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with caplog.at_level(logging.DEBUG, logger="wa_gateway.http_server"):
            assert raise_fd_limit(100) == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

        caplog.clear()
        assert raise_fd_limit(hard) == hard  # needs hard + FD_MARGIN: cannot be had
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert f"is {hard}, below the {hard + FD_MARGIN}" in warning.getMessage()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_file_descriptors_is_logged_once_and_so_is_the_recovery(serve):
    # uvloop logs nothing when accept() fails for want of descriptors: the gateway must.
    live = await serve(nofile=80, GATEWAY_HEADER_TIMEOUT="30", GATEWAY_KEEPALIVE_TIMEOUT="30")
    [warning] = log_lines(live, "the file descriptor limit (RLIMIT_NOFILE) is 80")
    assert "GATEWAY_MAX_CONNECTIONS=1000" in warning

    clients = []
    for _ in range(120):  # more than the gateway can hold
        with contextlib.suppress(ConnectionError):
            clients.append(await asyncio.open_connection("127.0.0.1", live.port))
    await live.wait_logged("out of file descriptors")
    for _, writer in clients:
        writer.close()
    await live.wait_logged("file descriptors available again")
    assert (await get(live.port)).startswith(b"HTTP/1.1 200")
    code, _ = await live.stop()
    assert code == 0
    assert "Traceback" not in live.stderr()
    assert len(log_lines(live, "out of file descriptors")) == 1, live.stderr()
    assert len(log_lines(live, "file descriptors available again")) == 1


async def test_asyncio_accept_failures_are_folded_into_one_line(caplog):
    """asyncio's own loop reports a failed accept() about once a second while it lasts."""
    loop = asyncio.get_running_loop()
    watch = FdWatch()
    watch.start(loop)
    try:
        with caplog.at_level(logging.INFO, logger="wa_gateway.http_server"):
            for _ in range(3):
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                })
            watch.check()  # descriptors are available, but not for long enough yet
            watch._last_failure -= FdWatch.SETTLE
            watch.check()
            watch.check()
    finally:
        watch.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "wa_gateway.http_server"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("out of file descriptors (Too many open files;")
    assert messages[1].startswith("file descriptors available again")
    assert loop.get_exception_handler() is None
