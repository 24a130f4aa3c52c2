"""`make bench`: every number next to a baseline measured in the same run, on this machine.

A gateway that does 3,000 req/s means nothing alone: RabbitMQ on this box may top
out at 3,500. So each section first measures what raw aio-pika gets from the same
broker, then the wa-gateway process doing the same job, and reports the ratio.

Sections (see benchmarks/README.md for what each number means):
  gateway  raw confirmed publish vs. `wa-gateway serve` POST /notify; open-loop latency
  drain    raw aio-pika consumer vs. `wa-gateway worker` with the `fake` provider
  slow     `wa-gateway worker` against a 200 ms provider vs. the prefetch/latency bound
  memory   idle and loaded RSS of `wa-gateway run`

Prints one table on stdout, writes it with details to .bench/results.json, and exits
0 when every target is met, 1 when one is missed, 2 when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import aiormq
import rabbit
from common import BenchError, Span, say
from loadgen import (
    LoadResult,
    closed_loop,
    constant_rate,
    ensure_wrk,
    http_closed_loop,
    open_loop,
    wrk_path,
)
from procs import GatewayProcess, StopReport, free_port, running
from report import Result, Target, failed_row, table, write_json

from wa_gateway.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
IDLE_SETTLE_SECONDS = 2.0
"""Let start-up garbage be collected and lazy imports happen before reading idle RSS."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--seconds", type=float, default=10, help="length of each measured load phase")
    add("--connections", type=int, default=64, help="concurrent connections / publishers")
    add("--rate", type=float, default=1000, help="offered rate of the latency phase, req/s")
    add("--drain-messages", type=int, default=20_000, help="messages drained per consumer")
    add("--slow-messages", type=int, default=3_000, help="messages for the 200 ms provider")
    add("--slow-prefetch", type=int, default=256, help="WA_WORKER_PREFETCH for the 200 ms run")
    add("--drain-prefetch", type=int, default=64, help="prefetch of both drain consumers")
    add("--output", type=Path, default=ROOT / ".bench" / "results.json")
    return parser.parse_args(argv)


@dataclass
class Bench:
    """What the sections share: settings, the run's queue prefix, and how processes ended."""

    args: argparse.Namespace
    url: str
    prefix: str
    workdir: Path
    stops: dict[str, StopReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    topologies: list[Topology] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return json.dumps({"to": rabbit.ALIAS, "text": rabbit.TEXT}).encode()

    def scratch(self, name: str) -> contextlib.AbstractAsyncContextManager[Topology]:
        """Queues named `bench<random>-<name>.*`, deleted when the block ends."""
        topology = rabbit.bench_topology(f"{self.prefix}-{name}")
        self.topologies.append(topology)
        return rabbit.scratch_topology(self.url, topology)

    async def sweep(self) -> None:
        """Delete every scratch topology again: a block's own clean-up fails if RabbitMQ was
        restarting just then, and nothing of ours may stay behind in the operator's broker."""
        for topology in self.topologies:
            try:
                await rabbit.delete_topology(self.url, topology)
            except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
                self.problems.append(
                    f"could not delete {topology.prefix}.* ({exc}): delete by hand"
                )

    def settings(self, topology: Topology, **extra: str) -> dict[str, str]:
        """The complete settings of a process: nothing else from the environment gets in."""
        return {
            "AMQP_URL": self.url,
            "WA_QUEUE_PREFIX": topology.prefix,
            "WA_RETRY_DELAYS": ",".join(f"{d:g}" for d in topology.retry_delays),
            f"WA_GROUP_{rabbit.ALIAS.upper()}_ID": rabbit.GROUP_ID,
            "GATEWAY_RATE_LIMIT": "0",  # capacity is measured, and all load comes from one address
            **extra,
        }

    def process(
        self, name: str, command: str, topology: Topology, **settings: str
    ) -> contextlib.AbstractAsyncContextManager[GatewayProcess]:
        return running(name, command, self.settings(topology, **settings), self.workdir, self.stops)

    @contextlib.asynccontextmanager
    async def http_process(
        self, name: str, command: str, topology: Topology, **settings: str
    ) -> AsyncIterator[tuple[GatewayProcess, str]]:
        """A `serve` or `run` on a free port, yielded once /readyz says the broker is up."""
        port = free_port()
        extra = {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **settings}
        async with self.process(name, command, topology, **extra) as process:
            base_url = f"http://127.0.0.1:{port}"
            await process.wait_ready(base_url)
            yield process, f"{base_url}/notify"

    async def section(
        self, title: str, run: Callable[[Bench], Awaitable[list[Result]]]
    ) -> list[Result]:
        """Run one section; if it cannot finish, it becomes a failed row and the rest go on."""
        say(f"== {title}")
        try:
            return await run(self)
        except (TimeoutError, BenchError, ConnectionError, aiormq.exceptions.AMQPError) as exc:
            reason = str(exc) or type(exc).__name__
            say(f"{title} failed: {reason}")
            return [failed_row(title, reason)]


# -- 1. gateway ----------------------------------------------------------------------------


async def bench_gateway(bench: Bench) -> list[Result]:
    """Accepted POST /notify per second vs. raw confirmed publishes; latency at a fixed rate."""
    raw = await raw_publish_baseline(bench)
    args = bench.args
    async with (
        bench.scratch("gateway") as topology,
        bench.http_process("gateway", "serve", topology, WA_PROVIDER="log") as (process, url),
    ):
        say(
            f"gateway: closed-loop POST /notify, {args.connections} connections, {args.seconds:g} s"
        )
        load = await http_closed_loop(
            url,
            bench.body,
            connections=args.connections,
            warmup=2,
            seconds=args.seconds,
            cpu=process.cpu_seconds,
        )
        say(f"gateway: open-loop {args.rate:g} req/s for {args.seconds:g} s")
        timed = await constant_rate(
            url,
            bench.body,
            rate=args.rate,
            warmup=1,
            seconds=args.seconds,
            connections=args.connections,
            cpu=process.cpu_seconds,
        )
        rss = process.rss_mb()
    return _gateway_rows(GatewayFigures(*raw, load, timed), rss)


async def raw_publish_baseline(bench: Bench) -> tuple[LoadResult, LoadResult]:
    """Raw aio-pika publishing, closed loop (the rate) and at the gateway's offered rate."""
    args = bench.args
    async with (
        bench.scratch("rawpub") as topology,
        rabbit.raw_publisher(bench.url, topology.work) as publish,
    ):
        say(f"baseline: raw confirmed publish, {args.connections} publishers on one channel")
        rate = await closed_loop(
            publish,
            concurrency=args.connections,
            warmup=1,
            seconds=args.seconds,
            cpu=time.process_time,
        )
        rate.tool = f"aio-pika, {args.connections} publishers, 1 channel"
        say(f"baseline: raw confirmed publish, open loop {args.rate:g}/s")
        latency = await open_loop(publish, rate=args.rate, warmup=1, seconds=args.seconds)
    return rate, latency


@dataclass
class GatewayFigures:
    """The four load phases of the gateway section, raw first."""

    raw_rate: LoadResult
    raw_latency: LoadResult
    rate: LoadResult
    latency: LoadResult


def _gateway_rows(figures: GatewayFigures, rss: float) -> list[Result]:
    raw, load, timed = figures.raw_rate, figures.rate, figures.latency
    at = f"@ {timed.extra['offered_per_s']:g} req/s open loop"
    extra = timed.extra
    lag = (
        f"vs. raw publish at the same rate; answered {extra['completed_per_s']:.0f}/s; "
        f"client send lag p99 {extra['send_lag_p99_ms']:.1f} ms (included), "
        f"client CPU {extra['client_cpu_percent']:.0f}%, gateway CPU {extra['cpu_percent']:.0f}%"
    )
    cpu = (
        f"CPU/op: gateway {load.extra['cpu_ms_per_op']:.2f} ms "
        f"at {load.extra['cpu_percent']:.0f}%, "
        f"raw publisher {raw.extra['cpu_ms_per_op']:.2f} ms at {raw.extra['cpu_percent']:.0f}%"
    )
    rejected = {
        **load.others(202),
        **{f"{k} (latency phase)": v for k, v in timed.others(202).items()},
    }
    return [
        Result(
            "gateway accepted POST /notify",
            load.rate(202),
            "req/s",
            baseline=raw.rate("confirmed"),
            target=Target(">=", 0.7, on_ratio=True),
            note=f"{load.tool} vs. raw {raw.tool}; {cpu}",
            details={"gateway": load.as_dict(), "raw_publish": raw.as_dict()},
        ),
        Result(
            f"gateway p50 {at}",
            timed.latencies_ms["p50"],
            "ms",
            baseline=figures.raw_latency.latencies_ms["p50"],
            details={"gateway": timed.as_dict(), "raw_publish": figures.raw_latency.as_dict()},
        ),
        Result(
            f"gateway p99 {at}",
            timed.latencies_ms["p99"],
            "ms",
            baseline=figures.raw_latency.latencies_ms["p99"],
            target=Target("<=", 10),
            note=lag,
        ),
        Result(
            "gateway non-202 answers",
            sum(rejected.values()),
            "",
            target=Target("<=", 0),
            note=", ".join(f"{k}: {v}" for k, v in rejected.items()),
            details=rejected,
        ),
        Result("`serve` RSS after load", rss, "MiB"),
    ]


# -- 2. and 3. worker ---------------------------------------------------------------------


async def worker_drain(bench: Bench, name: str, count: int, prefetch: int, latency: float) -> Span:
    """Pre-fill a queue, let `wa-gateway worker` (fake provider) drain it, time the sends."""
    async with bench.scratch(name) as topology:
        await rabbit.prefill(bench.url, topology, count)
        outbox = bench.workdir / f"{name}.outbox.jsonl"
        async with bench.process(
            name,
            "worker",
            topology,
            WA_PROVIDER="fake",
            WA_FAKE_LATENCY=f"{latency:g}",
            WA_WORKER_PREFETCH=str(prefetch),
            WA_LOG_OUTBOX=str(outbox),
        ) as process:
            say(
                f"{name}: worker draining {count} messages, "
                f"prefetch {prefetch}, latency {latency:g} s"
            )
            span = await outbox_span(outbox, count, process, timeout=max(60.0, count / 100))
        left = await rabbit.queue_depth(bench.url, topology.work)
        if left:
            bench.problems.append(
                f"{name}: {left} messages back in {topology.work} after the drain"
            )
    return span


async def outbox_span(path: Path, count: int, process: GatewayProcess, timeout: float) -> Span:
    """Wait for `count` lines from the fake provider; their own timestamps give the span.

    Reading the times the worker wrote (just before each ack) avoids any polling error;
    the poll only decides when it is over, and reads the file incrementally so that it
    takes no CPU from the worker on a 2-core machine.
    """
    deadline = time.monotonic() + timeout
    seen, offset, cpu_first = 0, 0, math.nan
    while seen < count:
        process.ensure_running()
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name}: {seen}/{count} messages sent after {timeout:g} s")
        await asyncio.sleep(0.1)
        if path.exists():
            with path.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
            offset += len(chunk)
            if not seen and chunk:
                cpu_first = process.cpu_seconds()
            seen += chunk.count(b"\n")
    cpu = process.cpu_seconds() - cpu_first
    lines = path.read_text(encoding="utf-8").splitlines()
    return Span(len(lines), _sent_at(lines[0]), _sent_at(lines[-1]), cpu)


def _sent_at(line: str) -> float:
    """The `time` the provider wrote into an outbox line, as a Unix timestamp."""
    try:
        return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(
            f"an outbox line has no ISO `time` field ({exc!r}): {line[:120]}"
        ) from None


async def bench_drain(bench: Bench) -> list[Result]:
    """Worker drain rate vs. a raw consumer doing nothing but ack, same queue kind and prefetch."""
    count, prefetch = bench.args.drain_messages, bench.args.drain_prefetch
    async with bench.scratch("rawdrain") as raw:
        await rabbit.prefill(bench.url, raw, count)
        baseline = await rabbit.raw_drain(
            bench.url, raw.work, count=count, prefetch=prefetch, timeout=max(60.0, count / 100)
        )
    span = await worker_drain(bench, "drain", count, prefetch, latency=0)
    return [
        Result(
            f"worker drain, fake 0 ms, prefetch {prefetch}",
            span.rate,
            "msg/s",
            baseline=baseline.rate,
            target=Target(">=", 0.6, on_ratio=True),
            note=(
                f"{count} msgs: worker {span.seconds:.2f} s, "
                f"raw consumer {baseline.seconds:.2f} s; "
                f"CPU/msg: worker {span.cpu_ms_per_event:.2f} ms, "
                f"raw {baseline.cpu_ms_per_event:.2f} ms"
            ),
            details={"worker": span.as_dict(), "raw_consumer": baseline.as_dict()},
        )
    ]


async def bench_slow_provider(bench: Bench) -> list[Result]:
    """With a 200 ms provider only concurrency matters; the bound is prefetch / latency."""
    count, prefetch, latency = bench.args.slow_messages, bench.args.slow_prefetch, 0.2
    span = await worker_drain(bench, "slow", count, prefetch, latency)
    return [
        Result(
            f"worker, fake 200 ms, prefetch {prefetch}",
            span.rate,
            "msg/s",
            baseline=prefetch / latency,
            target=Target(">=", 250),
            note=(
                f"baseline = WA_WORKER_PREFETCH/latency = {prefetch}/{latency:g} s "
                "(theoretical bound)"
            ),
            details={"worker": span.as_dict(), "prefetch": prefetch, "latency_s": latency},
        )
    ]


# -- 4. memory ----------------------------------------------------------------------------


async def bench_memory(bench: Bench) -> list[Result]:
    """RSS of `wa-gateway run` idle after start-up, and right after a gateway-style load."""
    seconds = max(1.0, bench.args.seconds / 2)
    async with (
        bench.scratch("memory") as topology,
        bench.http_process("run", "run", topology, WA_PROVIDER="log") as (process, url),
    ):
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        idle = process.rss_mb()
        say(f"memory: loading `run` for {seconds:g} s")
        load = await http_closed_loop(
            url, bench.body, connections=bench.args.connections, warmup=0, seconds=seconds
        )
        loaded = process.rss_mb()
    return [
        Result("`run` idle RSS", idle, "MiB", target=Target("<=", 80)),
        Result(
            "`run` RSS after load",
            loaded,
            "MiB",
            baseline=idle,
            note=(
                f"{load.outcomes[202]} accepted in {load.seconds:.1f} s ({load.tool}); "
                "baseline = idle"
            ),
            details=load.as_dict(),
        ),
    ]


SECTIONS: list[tuple[str, Callable[[Bench], Awaitable[list[Result]]]]] = [
    ("gateway", bench_gateway),
    ("worker drain", bench_drain),
    ("200 ms provider", bench_slow_provider),
    ("memory", bench_memory),
]


# -- the run ------------------------------------------------------------------------------


def run_metadata(bench: Bench, started: float) -> dict[str, object]:
    return {
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "queue_prefix": bench.prefix,
        "amqp_url": rabbit.shown_url(bench.url),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aio_pika": version("aio-pika"),
        "aiohttp": version("aiohttp"),
        "load_tool": "wrk" if wrk_path() else "aiohttp",
        "arguments": {k: str(v) for k, v in vars(bench.args).items()},
        "stops": {name: report.as_dict() for name, report in bench.stops.items()},
        "logs": str(bench.workdir),
    }


def fresh_workdir() -> Path:
    """Process logs and outboxes of the last run, kept for reading after a failure."""
    workdir = ROOT / ".bench" / "last-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


async def run_all(args: argparse.Namespace) -> int:
    started = time.time()
    url = os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL
    await rabbit.check_reachable(url)
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    bench = Bench(args, url, f"bench{secrets.token_hex(4)}", fresh_workdir())
    say(f"queue prefix {bench.prefix}; load tool {ensure_wrk()}; logs in {bench.workdir}")
    results: list[Result] = []
    try:
        for title, section in SECTIONS:
            results += await bench.section(title, section)
    finally:
        await bench.sweep()
    problems = bench.problems + [p for report in bench.stops.values() for p in report.problems()]
    write_json(args.output, results, run_metadata(bench, started), problems)
    print(table(results))
    if problems:
        print("\nproblems seen:\n" + "\n".join(f"  - {p}" for p in problems))
    print(f"\nwritten to {args.output} in {time.time() - started:.0f} s")
    return 0 if all(r.passed is not False for r in results) else 1


def quiet_client_logs() -> None:
    """aio-pika logs every failed connect attempt; the benchmark reports failures itself."""
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_client_logs()
    try:
        return asyncio.run(run_all(args))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; processes stopped and queues deleted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
