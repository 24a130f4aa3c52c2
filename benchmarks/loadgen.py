"""Load generators: closed-loop throughput (wrk, or aiohttp) and an open-loop constant rate.

Throughput is measured closed-loop (each of N workers sends its next request when the
previous one is answered), which finds the saturation rate. Latency is measured
open-loop: requests leave on a fixed timetable whatever the server does, and each
latency is taken from the request's *scheduled* send time. A closed-loop tool slows
down when the server stalls and so never records the requests that would have waited
(coordinated omission); the timetable makes every stall show up in the percentiles.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import BenchError, percentile, say

WRK_SCRIPT = Path(__file__).with_name("post.lua")
JSON_HEADERS = {"Content-Type": "application/json"}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)

Outcome = int | str
"""An HTTP status, or a short label: "confirmed", or an exception's class name."""


@dataclass
class LoadResult:
    """What one load phase produced: outcomes counted over `seconds`, latencies in ms."""

    seconds: float
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    latencies_ms: dict[str, float] = field(default_factory=dict)
    tool: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def rate(self, outcome: Outcome) -> float:
        return self.outcomes[outcome] / self.seconds

    def others(self, expected: Outcome) -> dict[str, int]:
        """Every outcome except the expected one, e.g. non-202 answers, for the report."""
        return {str(k): v for k, v in self.outcomes.items() if k != expected}

    def as_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "seconds": round(self.seconds, 3),
            "outcomes": {str(k): v for k, v in self.outcomes.items()},
            "latencies_ms": {k: round(v, 3) for k, v in self.latencies_ms.items()},
            **{k: round(v, 3) for k, v in self.extra.items()},
        }


# -- closed loop -------------------------------------------------------------------------


CpuClock = Callable[[], float]
"""CPU seconds used so far by the process doing the work (time.process_time, /proc)."""


def cpu_figures(spent: float, operations: int, seconds: float) -> dict[str, float]:
    """CPU per operation explains a rate: on a 2-core box a CPU-bound process tops out at
    1000 / cpu_ms_per_op operations per second, whatever the broker could take."""
    per_op = spent * 1000 / operations if operations else math.nan
    return {"cpu_ms_per_op": per_op, "cpu_percent": 100 * spent / seconds}


async def closed_loop(
    call: Callable[[], Awaitable[Outcome]],
    *,
    concurrency: int,
    warmup: float,
    seconds: float,
    cpu: CpuClock | None = None,
) -> LoadResult:
    """`concurrency` workers repeat `call`; only calls finishing in the measured window count.

    The warm-up lets connections open and caches fill before counting starts, so the
    rate is the steady state, not the start-up. `cpu` is read at both ends of the window.
    """
    loop = asyncio.get_running_loop()
    begin = loop.time() + warmup
    end = begin + seconds
    result = LoadResult(seconds=seconds, tool="asyncio closed loop")
    marks: dict[str, float] = {}
    if cpu is not None:
        loop.call_at(begin, lambda: marks.setdefault("begin", cpu()))
        loop.call_at(end, lambda: marks.setdefault("end", cpu()))

    took: list[float] = []

    async def worker() -> None:
        while loop.time() < end:
            started = loop.time()
            try:
                outcome = await call()
            except Exception as exc:  # noqa: BLE001 - a failed call is an outcome to report
                outcome = type(exc).__name__
            now = loop.time()
            if begin <= now < end:
                result.outcomes[outcome] += 1
                took.append((now - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.latencies_ms = {"p50": percentile(took, 50), "p99": percentile(took, 99)}
    if cpu is not None:
        spent = marks.setdefault("end", cpu()) - marks["begin"]
        result.extra |= cpu_figures(spent, result.outcomes.total(), seconds)
    return result


async def post_status(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    """One POST; the answer is read fully so that the connection can be reused."""
    async with session.post(url, data=body, headers=JSON_HEADERS) as response:
        await response.read()
        return response.status


def client_session(connections: int) -> aiohttp.ClientSession:
    """A keep-alive client holding at most `connections` connections, like wrk's -c."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT)


async def aiohttp_closed_loop(
    url: str, body: bytes, *, connections: int, warmup: float, seconds: float, cpu: CpuClock | None
) -> LoadResult:
    """The fallback when wrk is not installed; it costs more CPU than wrk, on the same cores."""
    async with client_session(connections) as session:
        result = await closed_loop(
            lambda: post_status(session, url, body),
            concurrency=connections,
            warmup=warmup,
            seconds=seconds,
            cpu=cpu,
        )
    result.tool = f"aiohttp, {connections} workers"
    return result


def wrk_path() -> str | None:
    return shutil.which("wrk")


def ensure_wrk() -> str:
    """Install wrk (a Debian package) when missing and we are root on Debian, as
    scripts/ensure-service.sh does for RabbitMQ; else fall back to aiohttp, saying so."""
    if wrk_path():
        return "wrk"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk is not installed; installing the Debian package: apt-get install -y wrk")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
            subprocess.run(command, capture_output=True, check=False)
    if wrk_path():
        return "wrk"
    say("wrk is not available: the closed-loop HTTP load uses the aiohttp generator instead")
    return "aiohttp"


async def wrk_closed_loop(
    url: str, body: bytes, *, connections: int, warmup: float, seconds: float, cpu: CpuClock | None
) -> LoadResult:
    """wrk with one thread (the machine has 2 cores, the gateway and RabbitMQ need them)."""
    if warmup > 0:
        await _run_wrk(url, body, connections=connections, seconds=warmup)
    before = cpu() if cpu else 0.0
    report = await _run_wrk(url, body, connections=connections, seconds=seconds)
    spent = cpu() - before if cpu else None
    result = LoadResult(
        seconds=report["duration_us"] / 1e6,
        outcomes=Counter({int(k): v for k, v in report["statuses"].items()}),
        latencies_ms={"p50": report["p50_us"] / 1000, "p99": report["p99_us"] / 1000},
        tool=f"wrk -t1 -c{connections}",
    )
    for kind, count in report["errors"].items():
        if count:
            result.outcomes[f"socket {kind} error"] += count
    if spent is not None:
        result.extra |= cpu_figures(spent, report["requests"], result.seconds)
    return result


async def _run_wrk(url: str, body: bytes, *, connections: int, seconds: float) -> dict:
    """Run wrk with post.lua and return the JSON line its done() hook prints."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": body.decode()}
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await process.communicate()
    finally:  # cancelled (Ctrl-C, SIGTERM): wrk must not go on loading a stopped gateway
        if process.returncode is None:
            process.kill()
            await process.wait()
    for line in stdout.decode().splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line.removeprefix("WRK_JSON "))
    raise BenchError(f"wrk gave no result (exit {process.returncode}): {stderr.decode().strip()}")


async def http_closed_loop(
    url: str,
    body: bytes,
    *,
    connections: int,
    warmup: float,
    seconds: float,
    cpu: CpuClock | None = None,
) -> LoadResult:
    """Saturating POST load with wrk when installed, else with the aiohttp fallback.

    `cpu` is the server's CPU clock: its CPU per request is reported with the rate.
    """
    generator = wrk_closed_loop if wrk_path() else aiohttp_closed_loop
    return await generator(
        url, body, connections=connections, warmup=warmup, seconds=seconds, cpu=cpu
    )


# -- open loop ----------------------------------------------------------------------------


async def open_loop(
    call: Callable[[], Awaitable[Outcome]],
    *,
    rate: float,
    warmup: float,
    seconds: float,
    cpu: CpuClock | None = None,
) -> LoadResult:
    """Start `call` `rate` times per second on a fixed timetable, whatever the answers do;
    each latency counts from the call's scheduled time.

    If this process falls behind (its loop was busy), the lateness is part of the
    latency: that is deliberate, and `send_lag_p99_ms` and `client_cpu_percent` say
    how much of it was ours. `cpu` is the server's CPU clock, read over the whole phase.
    """
    loop = asyncio.get_running_loop()
    total = round((warmup + seconds) * rate)
    cpu_before, client_before = (cpu() if cpu else 0.0), time.process_time()
    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_timed(call, scheduled)))
    samples = await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    result = _open_loop_result(samples[round(warmup * rate) :], seconds, rate)
    result.extra["client_cpu_percent"] = 100 * (time.process_time() - client_before) / elapsed
    result.extra["completed_per_s"] = len(samples) / elapsed  # below `rate`: a backlog grew
    if cpu is not None:
        result.extra |= cpu_figures(cpu() - cpu_before, len(samples), elapsed)
    return result


async def constant_rate(
    url: str,
    body: bytes,
    *,
    rate: float,
    warmup: float,
    seconds: float,
    connections: int,
    cpu: CpuClock | None = None,
) -> LoadResult:
    """POST at a constant `rate` over at most `connections` keep-alive connections."""
    async with client_session(connections) as session:
        result = await open_loop(
            lambda: post_status(session, url, body),
            rate=rate,
            warmup=warmup,
            seconds=seconds,
            cpu=cpu,
        )
    result.tool = f"aiohttp open loop {rate:g}/s, <= {connections} connections"
    return result


async def _timed(
    call: Callable[[], Awaitable[Outcome]], scheduled: float
) -> tuple[Outcome, float, float]:
    """(outcome, latency from the scheduled time, lag of the actual start) in seconds."""
    loop = asyncio.get_running_loop()
    lag = loop.time() - scheduled
    try:
        outcome = await call()
    except Exception as exc:  # noqa: BLE001 - any failure is an outcome to report
        outcome = type(exc).__name__
    return outcome, loop.time() - scheduled, lag


def _open_loop_result(
    samples: list[tuple[Outcome, float, float]], seconds: float, rate: float
) -> LoadResult:
    latencies = [latency * 1000 for _, latency, _ in samples]
    lags = [lag * 1000 for _, _, lag in samples]
    return LoadResult(
        seconds=seconds,
        outcomes=Counter(outcome for outcome, _, _ in samples),
        latencies_ms={
            q: percentile(latencies, n) for q, n in (("p50", 50), ("p99", 99), ("p99.9", 99.9))
        }
        | {"max": max(latencies, default=float("nan"))},
        tool=f"open loop {rate:g}/s",
        extra={"offered_per_s": rate, "send_lag_p99_ms": percentile(lags, 99)},
    )
