"""`wa-gateway serve --processes N`: a parent that keeps N `wa-gateway serve` children on one port.

Each child is an ordinary `serve` process (same interpreter, same global options and
environment) that binds the port itself with SO_REUSEPORT (`GATEWAY_REUSE_PORT=true`),
so the Linux kernel spreads new connections evenly over the children's listening
sockets. The parent holds a socket bound to the same address with SO_REUSEPORT but never
listening: it resolves `GATEWAY_PORT=0`, reports a port already taken as one line before
any child starts, and keeps the port reserved while a child restarts. A bound socket that
does not listen receives no connections.

A child that dies is restarted after a bounded backoff (0.5 s, doubling while it keeps
dying within `STABLE_AFTER` seconds of its start, at most `MAX_BACKOFF`). A child that
exits with status 2 - a mistake the operator must fix, already printed as one line by the
child - stops the parent with status 2 instead of a restart loop. SIGTERM/SIGINT is
forwarded to every child as SIGTERM (the children run in their own process group, so a
Ctrl-C on the terminal reaches the parent only and each child gets one signal); what is still running after `WA_SHUTDOWN_TIMEOUT` +
`KILL_MARGIN` seconds is killed, and the parent exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from .errors import UserError

log = logging.getLogger("wa_gateway.supervisor")

CONFIG_ERROR = 2
"""The exit status of a process that stopped on a mistake the operator must fix."""
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STABLE_AFTER = 10.0
"""A child that ran this long before dying is restarted after FIRST_BACKOFF again."""
KILL_MARGIN = 1.0
"""Seconds past WA_SHUTDOWN_TIMEOUT for the children's interpreter teardown before SIGKILL."""
POLL = 0.05


@dataclass
class _Child:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    start_at: float = field(default=0.0)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not listening (see the module doc)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class Supervisor:
    """Start, watch, restart and stop N `serve` children; `run()` returns the exit status."""

    def __init__(
        self, command: Sequence[str], processes: int, *, env: dict[str, str], shutdown_timeout: float
    ) -> None:
        self.command = list(command)
        self.env = env
        self.shutdown_timeout = shutdown_timeout
        self.children = [_Child(number) for number in range(1, processes + 1)]
        self.stopping = False

    def _signalled(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d gateway processes", signal.Signals(signum).name, len(self.children))
        self.stopping = True

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._signalled) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            status = self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _start(self, child: _Child) -> None:
        child.process = subprocess.Popen(
            self.command, env=self.env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=_die_with_parent
        )
        child.started = time.monotonic()
        again = f" (restart {child.restarts})" if child.restarts else ""
        log.info("gateway process %d started: pid %d%s", child.number, child.process.pid, again)

    def _watch(self) -> int:
        for child in self.children:
            self._start(child)
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if self.stopping:
                    break
                if child.process is None:
                    if now >= child.start_at:
                        child.restarts += 1
                        self._start(child)
                    continue
                status = child.process.poll()
                if status is None:
                    continue
                pid, lived = child.process.pid, now - child.started
                child.process = None
                if status == CONFIG_ERROR:
                    log.info("gateway process %d (pid %d) exited with status 2: stopping", child.number, pid)
                    return CONFIG_ERROR
                child.quick_deaths = child.quick_deaths + 1 if lived < STABLE_AFTER else 0
                delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, child.quick_deaths - 1))
                child.start_at = now + delay
                log.warning(
                    "gateway process %d (pid %d) exited with status %d after %.1f s; restarting in %.1f s",
                    child.number, pid, status, lived, delay,
                )
            time.sleep(POLL)
        return 0

    def _stop_all(self) -> None:
        running = [child for child in self.children if child.process is not None]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + KILL_MARGIN
        for child in running:
            assert child.process is not None
            try:
                status = child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "gateway process %d (pid %d) did not stop within the shutdown timeout: killing it",
                    child.number, child.process.pid,
                )
                child.process.kill()
                status = child.process.wait()
            log.info("gateway process %d (pid %d) exited with status %d", child.number, child.process.pid, status)
            child.process = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies without stopping it
    (SIGKILL, a crash), so no gateway is left running unsupervised. Linux only."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_PRCTL = None
if sys.platform == "linux":  # resolved before any fork: the child only calls it
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def child_command(env_file: str | None, *, verbose: bool, log_json: bool) -> list[str]:
    """`wa-gateway serve` with the parent's global options."""
    command = [sys.executable, "-m", "wa_gateway.cli", "--env-file", env_file or ""]
    if verbose:
        command.append("--verbose")
    if log_json:
        command.append("--log-json")
    return [*command, "serve"]


def serve_processes(
    processes: int, *, host: str, port: int, shutdown_timeout: float,
    env_file: str | None, verbose: bool = False, log_json: bool = False,
) -> int:
    """Run N `serve` children on host:port until SIGTERM/SIGINT; the exit status."""
    reserved = reserve_port(host, port)
    try:
        port = reserved.getsockname()[1]
        env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_REUSE_PORT": "true", "GATEWAY_PROCESSES": "1"}
        log.info("gateway on http://%s:%s: %d processes", host, port, processes)
        supervisor = Supervisor(
            child_command(env_file, verbose=verbose, log_json=log_json), processes,
            env=env, shutdown_timeout=shutdown_timeout,
        )
        status = supervisor.run()
    finally:
        reserved.close()
    log.info("stopped")
    return status
