"""End-to-end latency: from POST /notify to the `fake` provider receiving the message.

`serve` and `worker` run as deployed (separate processes, the ledger on in the run's
PostgreSQL database, `fake` provider with no latency), once with one channel and once
with four (`WA_CHANNELS=a,b,c,d`, each its own `fake` provider with its own outbox file,
one group alias pinned to each). The client posts at a steady rate, open loop, rotating
over the aliases, and keeps each accepted id with the time its request was *scheduled*
(wall clock). The provider writes each message's arrival time (wall clock, same machine)
into its outbox just before the worker acks it; the latency of a notification is that
time minus its scheduled time, so a stall anywhere - the client, the gateway, RabbitMQ,
the worker - shows up, as in the gateway's open-loop phase.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import rabbit
from bench import Bench
from common import BenchError, percentile, say
from loadgen import JSON_HEADERS, client_session
from procs import GatewayProcess, free_port
from report import Result, Target

FOUR = ("a", "b", "c", "d")
ARRIVAL_TIMEOUT = 15.0
"""Seconds after the load for the last accepted messages to reach their provider."""
TARGET_P99_MS = 25


@dataclass
class Figures:
    """One phase: each accepted id's scheduled time, and when its provider got it."""

    channels: int
    seconds: float
    rate: float
    scheduled: dict[str, float] = field(default_factory=dict)
    """id -> the wall-clock time its POST was due."""
    arrived: dict[str, float] = field(default_factory=dict)
    """id -> the wall-clock time its provider wrote it to the outbox."""
    statuses: dict[str, int] = field(default_factory=dict)
    send_lag_p99_ms: float = math.nan
    per_channel: dict[str, int] = field(default_factory=dict)

    @property
    def latencies_ms(self) -> list[float]:
        return [
            (self.arrived[i] - due) * 1000 for i, due in self.scheduled.items() if i in self.arrived
        ]

    @property
    def missing(self) -> int:
        return len(self.scheduled.keys() - self.arrived.keys())


async def bench_latency(bench: Bench) -> list[Result]:
    """The same steady load through one channel, then through four."""
    one = await end_to_end(bench, ())
    four = await end_to_end(bench, FOUR)
    return _rows(one) + _rows(four)


def _aliases(channels: tuple[str, ...]) -> dict[str, str]:
    """alias -> channel; with no channels, the one alias of the other sections."""
    if not channels:
        return {rabbit.ALIAS: "default"}
    return {f"{rabbit.ALIAS}{name}": name for name in channels}


def _settings(bench: Bench, name: str, channels: tuple[str, ...], database_url: str) -> dict[str, str]:
    settings = {
        "WA_LEDGER": "true",
        "DATABASE_URL": database_url,
        "WA_PROVIDER": "fake",
        "WA_FAKE_LATENCY": "0",
    }
    if not channels:
        settings["WA_LOG_OUTBOX"] = str(bench.workdir / f"{name}.outbox.jsonl")
        return settings
    settings["WA_CHANNELS"] = ",".join(channels)
    for alias, channel in _aliases(channels).items():
        upper = channel.upper()
        settings[f"WA_CHANNEL_{upper}_PROVIDER"] = "fake"
        settings[f"WA_CHANNEL_{upper}_WA_LOG_OUTBOX"] = str(bench.workdir / f"{name}-{channel}.outbox.jsonl")
        settings[f"WA_GROUP_{alias.upper()}_ID"] = rabbit.GROUP_ID
        settings[f"WA_GROUP_{alias.upper()}_CHANNEL"] = channel
    return settings


async def end_to_end(bench: Bench, channels: tuple[str, ...]) -> Figures:
    args = bench.args
    name = f"e2e{len(channels) or 1}"
    database_url = await bench.ledger_database()
    settings = _settings(bench, name, channels, database_url)
    aliases = _aliases(channels)
    bodies = [json.dumps({"to": alias, "text": rabbit.TEXT}).encode() for alias in aliases]
    metrics_port = free_port()
    async with (
        bench.scratch(name, channels or ("default",)) as topology,
        bench.process(
            f"{name}-worker", "worker", topology, **settings,
            GATEWAY_HOST="127.0.0.1", WA_METRICS_PORT=str(metrics_port),
        ) as worker,
        bench.http_process(f"{name}-gateway", "serve", topology, **settings) as (_gateway, url),
    ):
        await worker.wait_ready(f"http://127.0.0.1:{metrics_port}")
        figures = Figures(len(channels) or 1, args.latency_seconds, args.latency_rate)
        say(
            f"latency: {len(aliases)} channel(s), open loop {args.latency_rate:g} POST/s "
            f"for {args.latency_seconds:g} s (+1 s warm-up), POST -> provider"
        )
        await post_timed(url, bodies, figures, connections=args.connections)
        outboxes = [Path(settings[k]) for k in settings if k.endswith("WA_LOG_OUTBOX")]
        await wait_for_arrivals(outboxes, figures, worker)
    return figures


async def post_timed(url: str, bodies: list[bytes], figures: Figures, *, connections: int) -> None:
    """POST at `figures.rate` for 1 s of warm-up plus `figures.seconds`, open loop, bodies
    in turn; the ids accepted after the warm-up go into `figures.scheduled`."""
    loop = asyncio.get_running_loop()
    wall = time.time() - loop.time()  # loop time -> wall clock, for comparing with the outboxes
    warmup = round(figures.rate)
    total = warmup + round(figures.rate * figures.seconds)
    lags: list[float] = []
    statuses: dict[str, int] = {}

    async with client_session(connections) as session:

        async def post(i: int, due: float) -> None:
            lags.append(loop.time() - due)
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=JSON_HEADERS) as answer:
                    body = await answer.read()
                    status: str = str(answer.status)
                    if answer.status == 202 and i >= warmup:
                        figures.scheduled[json.loads(body)["id"]] = due + wall
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            if i >= warmup:
                statuses[status] = statuses.get(status, 0) + 1

        start = loop.time() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / figures.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, due)))
        await asyncio.gather(*tasks)
    figures.statuses = statuses
    figures.send_lag_p99_ms = percentile([lag * 1000 for lag in lags], 99)


async def wait_for_arrivals(outboxes: list[Path], figures: Figures, worker: GatewayProcess) -> None:
    """Read the outboxes until every accepted id is in one (or ARRIVAL_TIMEOUT passed)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    offsets = dict.fromkeys(outboxes, 0)
    while True:
        for path in outboxes:
            if not path.exists():
                continue
            with path.open("rb") as file:
                file.seek(offsets[path])
                chunk = file.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offsets[path] += len(complete)
            for line in complete.splitlines():
                record = json.loads(line)
                figures.arrived[record["id"]] = datetime.fromisoformat(record["time"]).timestamp()
                channel = path.stem.removesuffix(".outbox").rpartition("-")[2]
                figures.per_channel[channel] = figures.per_channel.get(channel, 0) + 1
        if not figures.missing or time.monotonic() > deadline:
            return
        worker.ensure_running()
        await asyncio.sleep(0.1)


def _rows(figures: Figures) -> list[Result]:
    if not figures.scheduled:
        raise BenchError(f"latency, {figures.channels} channel(s): no request was accepted ({figures.statuses})")
    latencies = figures.latencies_ms
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    where = "1 channel" if figures.channels == 1 else f"{figures.channels} channels"
    at = f"@ {figures.rate:g} POST/s"
    rejected = {k: v for k, v in figures.statuses.items() if k != "202"}
    spread = ", ".join(f"{k}: {v}" for k, v in sorted(figures.per_channel.items()))
    note = (
        f"{len(latencies)} of {len(figures.scheduled)} accepted reached the provider"
        + (f" ({figures.missing} not within {ARRIVAL_TIMEOUT:g} s)" if figures.missing else "")
        + f"; max {max(latencies, default=math.nan):.1f} ms; client send lag p99 "
        f"{figures.send_lag_p99_ms:.1f} ms (included); ledger on; per outbox: {spread}"
        + (f"; not 202: {rejected}" if rejected else "")
    )
    details = {
        "p50_ms": p50, "p99_ms": p99, "max_ms": max(latencies, default=math.nan),
        "accepted": len(figures.scheduled), "arrived": len(latencies), "statuses": figures.statuses,
        "per_outbox": figures.per_channel, "send_lag_p99_ms": figures.send_lag_p99_ms,
    }
    return [
        Result(f"end-to-end p50, POST -> provider, {where} {at}", p50, "ms", details=details),
        Result(
            f"end-to-end p99, POST -> provider, {where} {at}",
            p99,
            "ms",
            target=Target("<=", TARGET_P99_MS),
            note=note,
        ),
        Result(
            f"end-to-end: accepted but not delivered or not 202, {where}",
            figures.missing + sum(rejected.values()),
            "",
            target=Target("<=", 0),
        ),
    ]
