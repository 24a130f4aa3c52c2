"""Real `wa-gateway` processes for tests: a free port, stderr kept in a file, readiness.

Same command line as conftest's `spawn`, but stderr goes to a file instead of a pipe:
a pipe nobody reads until the end can fill up (64 KiB) and block a busy process, and
a test can watch the file while the process runs (e.g. for "stopping").
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Live:
    """One running `wa-gateway <command>` and the file its stderr goes to."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path, port: int | None) -> None:
        self.process, self.log, self.port = process, log, port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    async def wait_logged(self, needle: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.stderr():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.stderr()[-2000:]}")
            await asyncio.sleep(0.02)

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until GET /readyz answers 200 (the broker is connected)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"the process exited with {self.process.returncode}:\n{self.stderr()}")
                try:
                    async with http.get(f"{self.base}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"not ready within {timeout} s:\n{self.stderr()[-2000:]}")
                await asyncio.sleep(0.1)

    async def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, float]:
        """Signal it and wait: (exit code, seconds from the signal to the exit)."""
        started = time.monotonic()
        if sig is not None and self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"did not exit within {timeout} s of the signal:\n{self.stderr()[-2000:]}") from None
        return self.process.returncode, time.monotonic() - started

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def spawn_live(command: str, env: dict[str, str], log: Path, *, port: int | None = None) -> Live:
    if port is not None:
        env = {**env, "GATEWAY_PORT": str(port)}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wa_gateway.cli", "--env-file", "", command,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )
    return Live(process, log, port)
