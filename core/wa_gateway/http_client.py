"""A lean HTTP/1.1 client for provider APIs: what one send needs and nothing more.

Why not aiohttp's client (the server side stays aiohttp): in the worker sending over
HTTP, its ClientSession took 0.12 ms of the 0.33 ms the worker's one thread spends per
message, more than the whole AMQP consume path. A provider call is one small POST to
one origin, again and again; this client writes it with one `transport.write`, reads
the answer with httptools (llhttp, Node.js's parser, the one uvicorn uses) and keeps
the connections alive per origin.

What it does: http and https (certificates checked against the system's store, or the
SSLContext given), keep-alive with at most `limit` connections per origin (the rest
wait), an idle connection dropped a second before the server's `Keep-Alive: timeout`
would drop it, answers with Content-Length, chunked or read until the connection closes,
1xx answers skipped, a connect timeout inside a total timeout, bounds on the answer's
size, and for every failure whether the request had gone out (`HttpRequestError.sent`),
which is what tells "the provider may have accepted it" from "it never left".

What it leaves out, on purpose: redirects (a provider API that redirects is a wrong
URL: the 3xx is the answer), proxies, cookies, compression (it asks for none), request
streaming, HEAD (its answer has no body, which the parser cannot be told), HTTP/2.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""A provider's answer is a few hundred bytes; past this it is not one, and is not kept."""
MAX_HEADER_BYTES = 64 * 1024
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"
_FORBIDDEN_IN_HEADERS = frozenset("\r\n\0")
_KEEP_ALIVE_TIMEOUT = re.compile(r"timeout\s*=\s*(\d+)", re.IGNORECASE)


class HttpRequestError(Exception):
    """A request that got no complete answer.

    `sent` is True once any byte of it went out: the server may have acted on it.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class HttpTimeout(HttpRequestError, TimeoutError):
    """The connect or the total timeout ran out."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass(frozen=True)
class _Target:
    """What a URL says about where and what to ask, parsed once per URL."""

    origin: tuple[str, str, int]
    host_header: str
    request_target: str


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"bad port in URL {url!r}") from exc
    host = parts.hostname.encode("idna").decode("ascii")
    shown = f"[{host}]" if ":" in host else host
    default_port = port == (443 if scheme == "https" else 80)
    path = quote(parts.path or "/", safe=_SAFE_PATH)
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE_QUERY)
    return _Target((scheme, host, port), shown if default_port else f"{shown}:{port}", path)


def _header_line(name: str, value: str) -> str:
    if _FORBIDDEN_IN_HEADERS.intersection(name) or _FORBIDDEN_IN_HEADERS.intersection(value):
        raise ValueError(f"header {name!r} holds a line break or NUL")
    return f"{name}: {value}\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight, its answer parsed as
    it arrives."""

    def __init__(self, max_answer_bytes: int) -> None:
        self.max_answer_bytes = max_answer_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.server_idle_limit = math.inf
        """Seconds the server keeps this connection idle (`Keep-Alive: timeout=N`)."""
        self.answer: asyncio.Future[HttpResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.header_list: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.headers_done = False
        self.framed = False  # Content-Length or chunked: the end is known without a close
        self.keep_alive = False
        self.overflow = ""

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self.close()  # bytes nobody asked for: this connection's state is unknown
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # a callback's exception reaches here wrapped (HttpParserCallbackError)
            self._fail(self.overflow or f"unreadable HTTP answer: {exc}")

    def eof_received(self) -> bool:
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is None or answer.done():
            return
        if self.headers_done and not self.framed:
            self._complete()  # an answer without length ends where the connection does
        else:
            reason = f": {exc}" if exc else ""
            self._fail(f"the connection closed before the whole answer came{reason}")

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self.overflow = f"the answer's headers pass {MAX_HEADER_BYTES} bytes"
            raise _AnswerTooLarge(self.overflow)
        self.header_list.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        for name, value in self.header_list:
            lowered = name.lower()
            if lowered == "content-length" or (
                lowered == "transfer-encoding" and "chunked" in value.lower()
            ):
                self.framed = True
            elif lowered == "keep-alive":
                found = _KEEP_ALIVE_TIMEOUT.search(value)
                if found:
                    self.server_idle_limit = int(found.group(1))

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.max_answer_bytes:
            self.overflow = f"the answer passes {self.max_answer_bytes} bytes"
            raise _AnswerTooLarge(self.overflow)
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._reset()
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._complete()

    # -- for the pool

    def ask(self, request: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None
        self._reset()
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        assert self.answer is not None
        if not self.answer.done():
            headers = CIMultiDictProxy(CIMultiDict(self.header_list))
            self.answer.set_result(HttpResponse(self.status, headers, b"".join(self.body)))

    def _fail(self, message: str) -> None:
        self.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(HttpRequestError(message, sent=True))


class _AnswerTooLarge(Exception):
    pass


class _Origin:
    """The connections to one scheme://host:port: idle ones (last used first) and a
    count of all open ones, bounded by the client's limit."""

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()


class HttpClient:
    """Requests to a few origins over kept-alive HTTP/1.1 connections.

    One per provider, used from one event loop; `close()` closes every connection.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout: float,
        total_timeout: float,
        limit: int = 100,
        idle_timeout: float = 15.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.max_answer_bytes = max_answer_bytes
        self._ssl_context = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HttpResponse:
        """Send one request and read its whole answer.

        Raises HttpTimeout or HttpRequestError (with `sent`), ValueError for a URL or a
        header that cannot be sent.
        """
        if self._closed:
            raise HttpRequestError("the HTTP client is closed", sent=False)
        target = _target(url)
        wire = self._wire(method, target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout
        origin = self._origins.get(target.origin)
        if origin is None:
            origin = self._origins[target.origin] = _Origin()
        # The usual case, a kept-alive connection at hand, takes one timer and no
        # asyncio.timeout: that alone was 4 % of the worker's CPU per message.
        conn = self._idle_connection(origin)
        sent = False
        try:
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._acquire(target.origin, origin)
            sent = True
            answer = conn.ask(wire)
            timer = loop.call_at(deadline, _expire, answer)
            try:
                response = await answer
            finally:
                timer.cancel()
        except TimeoutError as exc:
            if sent:
                raise HttpTimeout(
                    f"no answer within {self.total_timeout:g} s", sent=True
                ) from exc
            raise HttpTimeout(
                "could not send within the timeout (connecting, or waiting for a free connection)",
                sent=False,
            ) from exc
        except OSError as exc:  # refused, unreachable, TLS failures, DNS
            raise HttpRequestError(f"{type(exc).__name__}: {exc}", sent=sent) from exc
        finally:
            if conn is not None:
                self._release(origin, conn)
        return response

    async def close(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            for waiter in origin.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        self._origins.clear()

    # -- the request's bytes

    def _wire(
        self,
        method: str,
        target: _Target,
        headers: Mapping[str, str] | None,
        body: bytes,
    ) -> bytes:
        lines = [
            f"{method} {target.request_target} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            f"User-Agent: {self.user_agent}\r\nAccept: */*\r\n"
        ]
        lines.extend(_header_line(name, value) for name, value in (headers or {}).items())
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"a header holds a character HTTP cannot carry: {exc}") from exc
        return head + body

    # -- the pool

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        """The last used idle connection still fit to use; the unfit ones are closed."""
        now = time.monotonic()
        while origin.idle:
            conn = origin.idle.pop()
            # a second short of the server's own limit: never write as it hangs up
            limit = min(self.idle_timeout, conn.server_idle_limit - 1)
            if conn.reusable and now - conn.idle_since < limit:
                return conn
            conn.close()
            origin.open -= 1
        return None

    async def _acquire(self, key: tuple[str, str, int], origin: _Origin) -> _Connection:
        """A new connection when the limit allows, else the next one given back."""
        while True:
            conn = self._idle_connection(origin)
            if conn is not None:
                return conn
            if origin.open < self.limit:
                origin.open += 1
                try:
                    return await self._connect(key)
                except BaseException:
                    origin.open -= 1
                    self._wake(origin)
                    raise
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            origin.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    late = waiter.result()
                    if late is not None:  # handed over just as we were cancelled
                        self._release(origin, late)
                raise
            if handed is not None:
                return handed
            if self._closed:
                raise HttpRequestError("the HTTP client is closed", sent=False)

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl_context or _default_ssl_context()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_answer_bytes),
                host,
                port,
                ssl=context,
                server_hostname=host if context else None,
            )
        return conn

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        answer = conn.answer
        if self._closed:  # closed meanwhile
            conn.close()
            return
        answered = (
            answer is not None and answer.done() and not answer.cancelled() and not answer.exception()
        )
        if not answered or not conn.reusable:
            if answer is not None and not answer.done():
                answer.cancel()
            conn.close()
            origin.open -= 1
            self._wake(origin)
            return
        while origin.waiters:
            waiter = origin.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = time.monotonic()
        origin.idle.append(conn)

    @staticmethod
    def _wake(origin: _Origin) -> None:
        """A slot freed: the first waiter may open a connection of its own."""
        while origin.waiters:
            waiter = origin.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _expire(answer: asyncio.Future[HttpResponse]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()

