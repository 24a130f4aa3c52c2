"""The HTTP server's connection hygiene: deadlines, a connection cap, file descriptors.

Left to its defaults, aiohttp keeps a connection that trickles its request head (or
sends nothing) for an hour, its keep-alive default being 3630 s, and accepts connections
until the process runs out of file descriptors, which under uvloop happens silently.
`GatewayRunner` is the web.AppRunner the long-running commands listen with instead:

- a client has GATEWAY_HEADER_TIMEOUT seconds to send a complete request head, counted
  from the connection, or on a kept-alive connection from the first byte of the next
  request; an idle kept-alive connection is closed after GATEWAY_KEEPALIVE_TIMEOUT, which
  also bounds the whole wait for the next head. The body has gateway.BODY_TIMEOUT.
- beyond GATEWAY_MAX_CONNECTIONS open connections a new one is answered
  `503` + `Connection: close` at once and closed. One line is logged when refusing
  starts and one when the count is back under the limit, not one per connection.
- running out of file descriptors is logged once when it starts and once when it ends,
  on asyncio's loop and on uvloop alike (`FdWatch`).

`raise_fd_limit()` lifts the soft RLIMIT_NOFILE to the hard limit at start-up.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

FD_MARGIN = 64
"""File descriptors a serving process needs besides its HTTP connections: the broker,
Redis, provider connections, the listening socket, the event loop, log files."""

REFUSAL_LINGER = 1.0
"""Seconds a refused connection stays open after its 503 for the client to close first."""
MAX_LINGERING = 64
"""Refused connections that may linger at once; beyond that they are closed at once (a
flood of refused connections must not use up the descriptors the cap protects)."""

_REFUSAL_BODY = b'{"error": "unavailable", "detail": "too many open connections; retry"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message (selector_events)


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            header_timeout=settings.gateway_header_timeout,
            keepalive_timeout=settings.gateway_keepalive_timeout,
            max_connections=settings.gateway_max_connections,
        )


class GatewayRunner(web.AppRunner):
    """A web.AppRunner whose server enforces `Limits` and whose process watches its
    file descriptors while it runs."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.limits = limits
        self._fd_watch: FdWatch | None = None

    async def _make_server(self) -> web.Server:
        # The one aiohttp hook used: AppRunner._make_server runs the app's startup and
        # builds aiohttp's web.Server (Application._make_handler). We build the same
        # server as a GuardedServer: same handler, request factory and RequestHandler
        # options, the latter kept in Server._kwargs (aiohttp 3.x).
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            limits=self.limits,
            **plain._kwargs,
        )

    async def setup(self) -> None:
        await super().setup()
        server = self.server
        self._fd_watch = FdWatch(server if isinstance(server, GuardedServer) else None)
        self._fd_watch.start(asyncio.get_running_loop())
        settle_gc()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            if self._fd_watch is not None:
                self._fd_watch.stop()
                self._fd_watch = None


GC_YOUNG_THRESHOLD = 10_000
"""Tracked objects allocated (net of those freed) before a young collection; Python's
default is 700."""
_gc_settled = False


def settle_gc() -> None:
    """Tune the cyclic garbage collector for a long-lived server, once per process (the
    first of the HTTP server and the worker to start). Measured under load, this took a
    gateway's time in the collector from 5-6 % of its CPU to under 0.1 %.

    - Start-up's objects (modules, pydantic's validators, the app: ~100,000) are moved out
      of its reach (`gc.freeze`): they live as long as the process, yet each full
      collection walked them all again.
    - A young collection runs after GC_YOUNG_THRESHOLD net new objects instead of 700: 64
      requests in flight hold more than 700 between them, so at the default a collection
      ran every few requests, walked them all and promoted them, to be walked again.
      Almost everything a request makes is freed by reference counting when it ends, so
      memory grows by no more than that many objects before a collection.
    """
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class GuardedServer(web.Server):
    """aiohttp's low-level server (the protocol factory handed to create_server) that
    counts its connections and refuses those over `limits.max_connections`."""

    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.open_connections = 0
        self.refused = 0
        """Connections refused since refusing last started."""
        self.refusing = False
        self._lingering = 0
        # Hysteresis: "back" only once well under the limit, so a process hovering at the
        # limit does not log a pair of lines per connection.
        self._resume_at = limits.max_connections - max(1, limits.max_connections // 10)

    def __call__(self) -> RequestHandler:
        """One protocol per accepted connection (asyncio and uvloop call this right after
        accept())."""
        if self.open_connections >= self.limits.max_connections:
            self._note_refused()
            return _Refused(self)  # type: ignore[return-value]  # any asyncio.Protocol will do
        # Counted here, not in connection_made: asyncio may accept a whole backlog before
        # any connection_made runs, and the cap must hold within that batch too.
        self.open_connections += 1
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def _note_refused(self) -> None:
        self.refused += 1
        if not self.refusing:
            self.refusing = True
            log.warning(
                "refusing new connections with 503: %d open, the GATEWAY_MAX_CONNECTIONS limit",
                self.open_connections,
            )

    def connection_closed(self) -> None:
        self.open_connections -= 1
        if self.refusing and self.open_connections <= self._resume_at:
            self.refusing = False
            log.info(
                "back under GATEWAY_MAX_CONNECTIONS=%d: accepting connections again "
                "(%d open; %d refused meanwhile)",
                self.limits.max_connections, self.open_connections, self.refused,
            )
            self.refused = 0


class GuardedRequestHandler(RequestHandler):
    """aiohttp's RequestHandler plus the request-head deadline.

    The deadline is armed when the connection is made, and on a kept-alive connection
    when the first bytes of the next request arrive; it is cancelled as soon as a
    complete head has been parsed. Private attributes read (aiohttp 3.x):
    `_request_count` (heads parsed so far on this connection) and `_waiter` (the future
    `start()` awaits while it waits for the next request).
    """

    __slots__ = ("_head_timeout", "_head_timer")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = manager.limits.header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a complete request head was parsed
            self._disarm()
        elif data and self._head_timer is None and self._waiting_for_request():
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager  # None when aiohttp has already handled the loss
        self._disarm()
        super().connection_lost(exc)
        if isinstance(manager, GuardedServer):
            manager.connection_closed()

    def _waiting_for_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None and (self._waiting_for_request() or self._request_count == 0):
            log.debug("closing a connection: no complete request head within %g s", self._head_timeout)
            self.force_close()


class _Refused(asyncio.Protocol):
    """Answers 503 without reading the request, then closes.

    The write side is shut at once and the socket closed when the client closes its own
    (or after REFUSAL_LINGER s): closing a socket with unread request bytes makes the
    kernel send a reset, which can destroy the 503 before the client reads it.
    """

    def __init__(self, server: GuardedServer) -> None:
        self._server = server
        self._timer: asyncio.TimerHandle | None = None
        self._lingers = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's TCPTransport is no asyncio.Transport subclass: no isinstance here)
        transport = cast(asyncio.Transport, transport)
        transport.write(_REFUSAL)
        if self._server._lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingers = True
        self._server._lingering += 1
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._lingers:
            self._lingers = False
            self._server._lingering -= 1


class FdWatch:
    """Logs one line when the process runs out of file descriptors and one when it has
    some again.

    asyncio's own loop reports each failed accept() through the loop's exception handler,
    about once a second while it lasts: those reports are folded into this state. uvloop
    (libuv) reports nothing: libuv accepts and at once closes the waiting connections with
    a spare descriptor it keeps for that. So the watch also checks by itself, every
    INTERVAL seconds: opening a file fails with EMFILE/ENFILE exactly when accept() would.
    """

    INTERVAL = 0.5
    SETTLE = 2.0
    """Seconds without a failure before "available again", so a process at the very
    edge of its limit does not log a pair of lines per connection."""

    def __init__(self, server: GuardedServer | None = None) -> None:
        self.server = server
        self.exhausted = False
        self._last_failure = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._previous_handler: Any = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._exception_handler)
        self._timer = loop.call_later(self.INTERVAL, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            if self._loop.get_exception_handler() == self._exception_handler:
                self._loop.set_exception_handler(self._previous_handler)
            self._loop = None

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            exc = context.get("exception")
            self.failed(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _tick(self) -> None:
        assert self._loop is not None
        self.check()
        self._timer = self._loop.call_later(self.INTERVAL, self._tick)

    def check(self) -> None:
        try:
            os.close(os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self.failed(exc.strerror or str(exc))
            return
        if self.exhausted and self._now() - self._last_failure >= self.SETTLE:
            self.exhausted = False
            log.info("file descriptors available again: accepting new connections")

    def failed(self, reason: str) -> None:
        self._last_failure = self._now()
        if self.exhausted:
            return
        self.exhausted = True
        open_connections = f"{self.server.open_connections} HTTP connections open, " if self.server else ""
        log.error(
            "out of file descriptors (%s; %sRLIMIT_NOFILE %s): new connections are dropped "
            "until some close; raise the limit or lower GATEWAY_MAX_CONNECTIONS",
            reason, open_connections, _soft_fd_limit(),
        )

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0


def _soft_fd_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit(max_connections: int | None = None) -> int | None:
    """Lift the soft RLIMIT_NOFILE to the hard limit where the system allows it; if it
    stays below what `max_connections` HTTP connections need (+ FD_MARGIN), log one
    warning. Returns the soft limit now in force (None where there is none: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = None if max_connections is None else max_connections + FD_MARGIN
    if soft != infinity and (hard == infinity or hard > soft):
        # macOS refuses an unlimited soft limit (OPEN_MAX): then settle for what is needed
        for target in (hard, needed):
            if target is None or (target != infinity and target <= soft):
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            log.debug("raised the file descriptor limit (RLIMIT_NOFILE) from %d to %s", soft, target)
            soft = target
            break
    if needed is not None and soft != infinity and soft < needed:
        log.warning(
            "the file descriptor limit (RLIMIT_NOFILE) is %d, below the %d that "
            "GATEWAY_MAX_CONNECTIONS=%d needs (+%d for the rest of the process): when it "
            "runs out, new connections are dropped; raise it (ulimit -n, systemd LimitNOFILE=) "
            "or lower GATEWAY_MAX_CONNECTIONS",
            soft, needed, max_connections, FD_MARGIN,
        )
    return soft
