"""A scriptable fake provider API on 127.0.0.1 that records every request, so a test
can assert the exact wire format and script every answer the real API gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import RawTestServer
from multidict import CIMultiDictProxy

NEVER = math.inf
"""An `Answer.delay` for a server that accepts the request and never answers."""


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a dict or list body is sent as JSON, str as text, bytes as is."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering; NEVER waits until the server closes."""

    def response(self) -> web.Response:
        if self.body is None:
            payload, content_type = b"", "text/plain"
        elif isinstance(self.body, bytes):
            payload, content_type = self.body, "application/octet-stream"
        elif isinstance(self.body, str):
            payload, content_type = self.body.encode(), "text/plain; charset=utf-8"
        else:
            payload = json.dumps(self.body, ensure_ascii=False).encode()
            content_type = "application/json; charset=utf-8"
        headers = {"Content-Type": content_type, **self.headers}
        return web.Response(status=self.status, body=payload, headers=headers)


@dataclass(frozen=True)
class RecordedRequest:
    """A request exactly as the fake API received it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    peer: tuple[str, int]
    """The client's address and port: equal for requests sent over one connection."""

    @property
    def content_type(self) -> str:
        """The media type without parameters, e.g. 'application/json'."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as UTF-8 JSON; raises when it is not."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The url-encoded body as a dict; raises on a malformed body or a repeated field."""
        pairs = parse_qsl(
            self.body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(self.body),
            encoding="utf-8",
            errors="strict",
        )
        form = dict(pairs)
        assert len(form) == len(pairs), f"repeated form fields: {pairs}"
        return form


class FakeProviderApi:
    """A local HTTP server standing in for a provider's API; use it with `async with`.

    Each request gets the next answer of the script (`FakeProviderApi(*answers)`,
    `api.script(*answers)`), then `default` once the script is used up.
    """

    def __init__(self, *script: Answer, default: Answer = Answer(200, {})) -> None:
        self.default = default
        self.requests: list[RecordedRequest] = []
        self._script: deque[Answer] = deque(script)
        self._closing = asyncio.Event()
        self._server = RawTestServer(self._handle, host="127.0.0.1")

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:41234 (no trailing slash)."""
        return str(self._server.make_url("")).rstrip("/")

    @property
    def open_connections(self) -> int:
        return len(self._server.handler.connections)

    def script(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def __aenter__(self) -> Self:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing.set()  # release requests waiting on a delay so shutdown is quick
        await self._server.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        peername = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=request.headers,
                body=body,
                peer=tuple(peername[:2]) if peername else ("", 0),
            )
        )
        answer = self._script.popleft() if self._script else self.default
        if answer.delay:
            timeout = None if math.isinf(answer.delay) else answer.delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout)
        return answer.response()


def closed_port() -> int:
    """A local port nobody listens on, so connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
