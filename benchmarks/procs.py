"""`wa-gateway` subprocesses: isolated settings, readiness, RSS, and a stop that is checked.

Each process gets only the settings its benchmark gives it (the developer's WA_* or
REDIS_URL variables and `.env` must not change the numbers), runs in its own session
so that nothing it starts outlives the benchmark, and is stopped with SIGTERM as a
deployment would stop it. How that stop went (time, exit status, tracebacks in its
log) is part of the result: a process that crashes under load or hangs on shutdown
is a finding, not noise.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import BenchError, say

SETTING_PREFIXES = (
    "WA_", "GATEWAY_", "AMQP_", "REDIS_", "DATABASE_", "WATZAP_", "META_", "TWILIO_"
)
STOP_TIMEOUT = 20.0
"""SIGKILL after this: longer than the default WA_SHUTDOWN_TIMEOUT (10 s) plus slack."""
SLOW_STOP = 5.0
"""A stop with nothing in flight that takes longer than this is reported."""
LOG_PROBLEM_MARKERS = (
    "Traceback",
    " ERROR ",
    " CRITICAL ",
    '"level": "error"',
    '"level": "critical"',
)
"""Plain-text and JSON (structlog) log lines that mean something went wrong."""

_LIVE: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last line of defence: if the event loop died, no child may outlive us."""
    for process in list(_LIVE):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def gateway_command() -> list[str]:
    """The installed console script next to this interpreter, as `make run` starts it."""
    script = Path(sys.executable).parent / "wa-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "wa_gateway.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any wa-gateway setting, plus `settings`."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(SETTING_PREFIXES)}
    return {**base, **settings}


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/<pid>/stat (clock-tick resolution)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children and so on (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # gone meanwhile
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and of every descendant alive now (`serve --processes N`: the
    parent and its N children)."""
    total = 0.0
    for member in (pid, *descendants(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds_of(member)
    return total


def rss_mb_of(pid: int) -> float:
    """Resident set size of `pid` from /proc, in MiB: what the kernel charges it now."""
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def local_broker_pid() -> int | None:
    """The RabbitMQ node's Erlang VM (beam.smp) on this machine, if there is exactly one
    and we may read it: its CPU says how much of a rate went to the broker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            if b"rabbit" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found[0] if len(found) == 1 else None


@dataclass
class StopReport:
    """How a process ended; `problems()` turns the bad parts into report lines."""

    name: str
    seconds: float
    returncode: int | None
    killed: bool
    log_problems: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        if self.killed:
            found.append(f"{self.name}: did not exit {STOP_TIMEOUT:g} s after SIGTERM; killed")
        elif self.seconds > SLOW_STOP:
            found.append(f"{self.name}: took {self.seconds:.1f} s to exit after SIGTERM")
        if not self.killed and self.returncode not in (0, None):
            found.append(f"{self.name}: exit status {self.returncode} after SIGTERM")
        found += [f"{self.name} log: {line}" for line in self.log_problems]
        return found

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "returncode": self.returncode,
            "killed": self.killed,
        }


class GatewayProcess:
    """One `wa-gateway <command>` with its output in `<workdir>/<name>.log`."""

    def __init__(self, name: str, command: str, settings: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.settings = dict(settings)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [*gateway_command(), self.command],
                cwd=self.workdir,  # no .env there: only our settings count
                env=isolated_environment(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self._process)

    def ensure_running(self) -> None:
        """Raise with the end of its log if the process has exited on its own."""
        assert self._process is not None
        if self._process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self._process.returncode}: {self.log_tail()}"
            )

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def rss_mb(self) -> float:
        """Resident set size from /proc, in MiB: what the kernel charges the process now."""
        return rss_mb_of(self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/<pid>/stat (clock-tick resolution)."""
        return cpu_seconds_of(self.pid)

    def tree_cpu_seconds(self) -> float:
        """The same for the process and its children (`serve --processes N`)."""
        return tree_cpu_seconds(self.pid)

    async def wait_ready(self, base_url: str, timeout: float = 30.0) -> None:
        """Poll /readyz until it answers 200: only then is the broker connection up."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                self.ensure_running()
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{base_url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout:g} s: {self.log_tail()}")

    async def stop(self) -> StopReport:
        """SIGTERM, wait, SIGKILL the whole session if it hangs; then read its log."""
        process = self._process
        assert process is not None
        started = time.monotonic()
        killed = False
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            killed = not await _wait_exit(process, STOP_TIMEOUT)
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
                await _wait_exit(process, 5)
        with contextlib.suppress(ProcessLookupError):  # helpers it left behind, if any
            os.killpg(process.pid, signal.SIGKILL)
        _LIVE.discard(process)
        return StopReport(
            self.name, time.monotonic() - started, process.returncode, killed, self._log_problems()
        )

    def _log_problems(self, limit: int = 3) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        hits = [
            _shortened(line.strip())
            for line in lines
            if any(m in line for m in LOG_PROBLEM_MARKERS)
        ]
        return list(dict.fromkeys(hits))[:limit]


def _shortened(line: str, limit: int = 240) -> str:
    """A log line fit for a summary; the whole line stays in the log file."""
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def _wait_exit(process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def run_command(
    name: str, arguments: list[str], settings: Mapping[str, str], workdir: Path, timeout: float = 60
) -> str:
    """Run `wa-gateway <arguments>` to its end (e.g. `db upgrade`), isolated like the rest;
    its last line of output, or a BenchError with it when it fails."""
    log_path = workdir / f"{name}.log"
    say(f"running `wa-gateway {' '.join(arguments)}` ({name})")
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *gateway_command(),
            *arguments,
            cwd=workdir,
            env=isolated_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BenchError(f"{name}: `wa-gateway {' '.join(arguments)}` took over {timeout:g} s") from None
    lines = log_path.read_text(errors="replace").strip().splitlines()
    last = lines[-1] if lines else "(no output)"
    if returncode != 0:
        raise BenchError(f"{name}: `wa-gateway {' '.join(arguments)}` exited {returncode}: {last}")
    return last


@contextlib.asynccontextmanager
async def running(
    name: str,
    command: str,
    settings: Mapping[str, str],
    workdir: Path,
    stops: dict[str, StopReport],
) -> AsyncIterator[GatewayProcess]:
    """Start a process for the block, stop it on any exit; its StopReport lands in `stops`."""
    process = GatewayProcess(name, command, settings, workdir)
    say(f"starting `wa-gateway {command}` ({name})")
    process.start()
    try:
        yield process
    finally:
        stops[name] = await process.stop()
