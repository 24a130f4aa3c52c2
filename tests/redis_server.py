"""A private real Redis a test can shut down and start again on the same port.

The machine's Redis serves every other test; an outage test gets its own
`redis-server` (the same binary), stopped the way an operator's bad day goes:
`redis-cli shutdown nosave`, then started again with the same options.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/usr/sbin") / name) if p.exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return found


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            _binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    async def shutdown(self) -> None:
        """`redis-cli shutdown nosave`, as in the issue's outage."""
        cli = await asyncio.create_subprocess_exec(
            _binary("redis-cli"), "-p", str(self.port), "shutdown", "nosave",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await cli.wait()
        if self._process is not None:
            await asyncio.wait_for(self._process.wait(), 10)

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
