"""A local Meta Cloud API that answers every request at once, for the worker-over-HTTP row.

The real `meta` plugin sends to it over HTTP (WA_API_URL); the point is to measure what
the worker's HTTP path costs, so the fake itself must cost next to nothing on the same
two cores. It is an asyncio Protocol, not an aiohttp server: it reads a request head,
skips the body by its Content-Length, and writes one canned `200` with a `wamid` (the
receipt the plugin wants), about a tenth of what an aiohttp handler takes per request.
It keeps the time each request arrived, which gives the rate the way the outbox does
for the `fake` provider: (N - 1) / (last - first), start-up not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import cast

_HEAD_END = b"\r\n\r\n"


class MetaFake:
    """Counts requests; `arrivals` holds each one's time.time() (wall clock, as the
    outbox files have it)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.port = 0
        self.bad_requests = 0

    def answer(self) -> bytes:
        body = (
            b'{"messaging_product":"whatsapp","contacts":[{"input":"+6281234567890",'
            b'"wa_id":"6281234567890"}],"messages":[{"id":"wamid.BENCH'
            + str(len(self.arrivals)).encode()
            + b'"}]}'
        )
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[MetaFake]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        sockets = server.sockets
        self.port = sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    @property
    def url(self) -> str:
        """WA_API_URL for the plugin: it posts to <url>/<phone number id>/messages."""
        return f"http://127.0.0.1:{self.port}/v21.0"


class _Connection(asyncio.Protocol):
    def __init__(self, fake: MetaFake) -> None:
        self.fake = fake
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                return
            length = _content_length(self.buffer[:end])
            if length is None:
                self.fake.bad_requests += 1
                assert self.transport is not None
                self.transport.close()
                return
            total = end + len(_HEAD_END) + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.fake.arrivals.append(time.time())
            assert self.transport is not None
            self.transport.write(self.fake.answer())


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return 0  # no body
