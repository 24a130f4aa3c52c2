"""`make bench`: every number next to a baseline measured in the same run, on this machine.

A gateway that does 3,000 req/s means nothing alone: RabbitMQ on this box may top
out at 3,500. So each section first measures what raw aio-pika gets from the same
broker, then the wa-gateway process doing the same job, and reports the ratio.

Sections (see benchmarks/README.md for what each number means):
  gateway  raw confirmed publish vs. `wa-gateway serve` POST /notify; open-loop latency
  drain    raw aio-pika consumer vs. `wa-gateway worker` with the `fake` provider
  slow     `wa-gateway worker` against a 200 ms provider vs. the prefetch/latency bound
  memory   idle and loaded RSS of `wa-gateway run`
  ledger   `serve` with WA_LEDGER=true vs. false; time from a `sent` change to its row
           in PostgreSQL, and that every accepted notification got one

The gateway and worker sections run with WA_LEDGER=false, so that they measure the path
their single-queue baselines do; `memory` measures `run` as shipped (ledger on, SQLite).

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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import aiohttp
import aiormq
import asyncpg
import database
import rabbit
from common import BenchError, Span, percentile, say
from loadgen import (
    JSON_HEADERS,
    CpuClock,
    LoadResult,
    Outcome,
    client_session,
    closed_loop,
    constant_rate,
    ensure_wrk,
    http_closed_loop,
    open_loop,
    wrk_path,
)
from procs import (
    GatewayProcess,
    StopReport,
    cpu_seconds_of,
    free_port,
    local_broker_pid,
    run_command,
    running,
)
from prometheus_client.parser import text_string_to_metric_families
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
    add("--ledger-rate", type=float, default=500, help="offered rate of the ledger lag phase")
    add("--ledger-seconds", type=float, default=10, help="length of the ledger lag phase")
    add(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL") or database.DEFAULT_ADMIN_URL,
        help="a PostgreSQL role that may create databases (wa_bench_<random>, dropped after)",
    )
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
    databases: list[str] = field(default_factory=list)
    ledger_url: str | None = None

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

    async def ledger_database(self) -> str:
        """DATABASE_URL of this run's PostgreSQL database, created and migrated on first use
        (a process finding no schema on PostgreSQL stops), dropped by `drop_databases`."""
        if self.ledger_url is None:
            name, url = await database.create_database(self.args.postgres_url)
            self.databases.append(name)
            line = await run_command(
                "db-upgrade", ["db", "upgrade"], {"DATABASE_URL": url}, self.workdir
            )
            say(line)
            self.ledger_url = url
        return self.ledger_url

    async def drop_databases(self) -> None:
        for name in self.databases:
            try:
                await database.drop_database(self.args.postgres_url, name)
            except (OSError, TimeoutError, BenchError, asyncpg.PostgresError) as exc:
                self.problems.append(f"could not drop database {name} ({exc}): drop it by hand")

    def settings(self, topology: Topology, **extra: str) -> dict[str, str]:
        """The complete settings of a process: nothing else from the environment gets in."""
        return {
            "AMQP_URL": self.url,
            "WA_QUEUE_PREFIX": topology.prefix,
            "WA_RETRY_DELAYS": ",".join(f"{d:g}" for d in topology.retry_delays),
            f"WA_GROUP_{rabbit.ALIAS.upper()}_ID": rabbit.GROUP_ID,
            "GATEWAY_RATE_LIMIT": "0",  # capacity is measured, and all load comes from one address
            "WA_LEDGER": "false",  # on only where a section says so
            **extra,
        }

    def process(
        self, name: str, command: str, topology: Topology, **settings: str
    ) -> contextlib.AbstractAsyncContextManager[GatewayProcess]:
        return running(name, command, self.settings(topology, **settings), self.workdir, self.stops)

    @contextlib.asynccontextmanager
    async def http_process(
        self, name: str, command: str, topology: Topology, *, wait: bool = True, **settings: str
    ) -> AsyncIterator[tuple[GatewayProcess, str]]:
        """A `serve` or `run` on a free port, yielded once /readyz says the broker is up
        (with `wait=False` at once: the caller waits, e.g. for several in parallel)."""
        port = free_port()
        extra = {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **settings}
        async with self.process(name, command, topology, **extra) as process:
            base_url = f"http://127.0.0.1:{port}"
            if wait:
                await process.wait_ready(base_url)
            yield process, f"{base_url}/notify"

    async def section(
        self, title: str, run: Callable[[Bench], Awaitable[list[Result]]]
    ) -> list[Result]:
        """Run one section; if it cannot finish, it becomes a failed row and the rest go on."""
        say(f"== {title}")
        try:
            return await run(self)
        except (
            TimeoutError,
            BenchError,
            ConnectionError,
            aiormq.exceptions.AMQPError,
            asyncpg.PostgresError,
        ) as exc:
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
    """RSS of `wa-gateway run` idle after start-up, and right after a gateway-style load.

    `run` as `make run` starts it: the ledger on, in a SQLite file in the run directory.
    """
    seconds = max(1.0, bench.args.seconds / 2)
    async with (
        bench.scratch("memory") as topology,
        bench.http_process(
            "run", "run", topology, WA_PROVIDER="log", WA_LEDGER="true"
        ) as (process, url),
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


# -- 5. ledger ----------------------------------------------------------------------------


@dataclass
class Tally:
    """One gateway's measured phases added up: answers, seconds, and the CPU they took."""

    seconds: float = 0.0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    gateway_cpu: float = 0.0
    broker_cpu: float = 0.0
    phases: list[dict[str, object]] = field(default_factory=list)

    def add(self, load: LoadResult, gateway_cpu: float, broker_cpu: float) -> None:
        self.seconds += load.seconds
        self.outcomes.update(load.outcomes)
        self.gateway_cpu += gateway_cpu
        self.broker_cpu += broker_cpu
        self.phases.append(load.as_dict())

    @property
    def accepted(self) -> int:
        return self.outcomes[202]

    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else math.nan

    def cpu_ms(self, spent: float) -> float:
        """CPU per answer, in ms."""
        return spent * 1000 / max(1, self.outcomes.total())

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "outcomes": {str(k): v for k, v in self.outcomes.items()},
            "rate": round(self.rate(), 1),
            "gateway_cpu_ms_per_op": round(self.cpu_ms(self.gateway_cpu), 3),
            "gateway_cpu_percent": round(100 * self.gateway_cpu / self.seconds, 1),
            "broker_cpu_ms_per_op": round(self.cpu_ms(self.broker_cpu), 3),
            "phases": self.phases,
        }


LEDGER_ORDER = ("false", "true", "true", "false")
"""WA_LEDGER of the measured phases, each half of --seconds: off, on, on, off, so that a
drift of the machine's load over the section (another program starting, RabbitMQ's own
housekeeping) counts alike for both."""


async def bench_ledger_accept(bench: Bench) -> list[Result]:
    """The gateway's closed-loop accept rate with WA_LEDGER=false and =true, interleaved.

    Two `serve` processes, one of each, run side by side on their own queues; only one
    is loaded at a time. No worker runs: see benchmarks/README.md ("ledger on vs. off").
    """
    args = bench.args
    url = await bench.ledger_database()
    broker_pid = local_broker_pid()

    def broker_cpu() -> float:
        return cpu_seconds_of(broker_pid) if broker_pid else 0.0

    async with (
        bench.scratch("ledgeroff") as off_topology,
        bench.scratch("ledgeron") as on_topology,
        bench.http_process(
            "gateway-ledgeroff", "serve", off_topology,
            wait=False, WA_PROVIDER="log", WA_LEDGER="false",
        ) as off,
        bench.http_process(
            "gateway-ledgeron", "serve", on_topology,
            wait=False, WA_PROVIDER="log", WA_LEDGER="true", DATABASE_URL=url,
        ) as on,
    ):
        gateways = {"false": off, "true": on}
        await asyncio.gather(*(p.wait_ready(u.removesuffix("/notify")) for p, u in (off, on)))

        def load(ledger: str, seconds: float) -> Awaitable[LoadResult]:
            return http_closed_loop(
                gateways[ledger][1], bench.body,
                connections=args.connections, warmup=0, seconds=seconds,
            )

        say("ledger: warming up both gateways for 2 s")
        _, warmed = await asyncio.gather(load("false", 2), load("true", 2))
        tallies = {"false": Tally(), "true": Tally()}
        for ledger in LEDGER_ORDER:
            process = gateways[ledger][0]
            say(f"ledger: closed-loop POST /notify, WA_LEDGER={ledger}, {args.seconds / 2:g} s")
            before = process.cpu_seconds(), broker_cpu()
            result = await load(ledger, args.seconds / 2)
            tallies[ledger].add(
                result, process.cpu_seconds() - before[0], broker_cpu() - before[1]
            )
        copies = await rabbit.queue_depth(bench.url, on_topology.ledger_queue)
        if await rabbit.queue_exists(bench.url, off_topology.ledger_queue):
            bench.problems.append("ledger: the WA_LEDGER=false gateway declared a ledger queue")
    accepted_on = warmed.outcomes[202] + tallies["true"].accepted
    if copies < accepted_on:
        bench.problems.append(
            f"ledger: {on_topology.ledger_queue} holds {copies} copies for {accepted_on} "
            "accepted requests: some accepted notifications have no copy"
        )
    return _ledger_accept_rows(
        tallies["false"], tallies["true"], copies, accepted_on,
        tool=result.tool, broker=broker_pid is not None,
    )


def _ledger_accept_rows(
    off: Tally, on: Tally, copies: int, accepted_on: int, *, tool: str, broker: bool
) -> list[Result]:
    rejected = {
        f"{k} (ledger {state})": v
        for state, tally in (("off", off), ("on", on))
        for k, v in tally.outcomes.items()
        if k != 202
    }
    cpu = (
        f"CPU/request: gateway {on.cpu_ms(on.gateway_cpu):.2f} ms on, "
        f"{off.cpu_ms(off.gateway_cpu):.2f} ms off"
    )
    if broker:
        cpu += (
            f"; RabbitMQ {on.cpu_ms(on.broker_cpu):.2f} ms on, "
            f"{off.cpu_ms(off.broker_cpu):.2f} ms off"
        )
    return [
        Result(
            "gateway accepted POST /notify, ledger on (baseline: off)",
            on.rate(),
            "req/s",
            baseline=off.rate(),
            target=Target(">=", 0.9, on_ratio=True),
            note=(
                f"{tool}, phases off/on/on/off, no worker; {cpu}; "
                f"ledger queue holds {copies} copies for {accepted_on} 202s counted "
                "(warm-up included; wrk does not count answers after its end)"
            ),
            details={
                "ledger_off": off.as_dict(),
                "ledger_on": on.as_dict(),
                "ledger_queue_depth": copies,
                "accepted_with_ledger_incl_warmup": accepted_on,
            },
        ),
        Result(
            "gateway non-202 answers, ledger on/off",
            sum(rejected.values()),
            "",
            target=Target("<=", 0),
            note=", ".join(f"{k}: {v}" for k, v in rejected.items()),
            details=rejected,
        ),
    ]


LAG_DRAIN_TIMEOUT = 30.0
"""Seconds after the load ends for the last `sent` rows to appear before they count as lost."""


async def bench_ledger_lag(bench: Bench) -> list[Result]:
    """`serve` + `worker` (fake provider, ledger on, PostgreSQL) at a steady open-loop rate:
    the time from each `sent` change (its `at`) to the moment its row could be read."""
    args = bench.args
    url = await bench.ledger_database()
    metrics_port = free_port()
    ledger = {"WA_LEDGER": "true", "DATABASE_URL": url, "WA_PROVIDER": "fake"}
    async with (
        bench.scratch("lag") as topology,
        bench.process(
            "lag-worker",
            "worker",
            topology,
            **ledger,
            WA_FAKE_LATENCY="0",
            WA_LOG_OUTBOX=str(bench.workdir / "lag.outbox.jsonl"),
            GATEWAY_HOST="127.0.0.1",
            WA_METRICS_PORT=str(metrics_port),
        ) as worker,
        bench.http_process("lag-gateway", "serve", topology, **ledger) as (gateway, post_url),
        database.RowSampler(url).running() as sampler,
    ):
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        await worker.wait_ready(metrics_url)
        say(
            f"lag: open-loop {args.ledger_rate:g} notifications/s for {args.ledger_seconds:g} s, "
            f"sampling notification_events every {sampler.interval * 1000:g} ms"
        )
        worker_cpu = worker.cpu_seconds()
        load, accepted = await post_collecting_ids(
            post_url, bench.body, rate=args.ledger_rate, seconds=args.ledger_seconds,
            connections=args.connections, cpu=gateway.cpu_seconds,
        )
        worker_cpu = worker.cpu_seconds() - worker_cpu
        waited = await wait_for_rows(sampler, accepted, worker, LAG_DRAIN_TIMEOUT)
        histogram = await ledger_lag_histogram(f"{metrics_url}/metrics")
    events, current = await database.count_rows(url, "sent", accepted)
    return _lag_rows(load, accepted, sampler, histogram, events, current, waited, worker_cpu)


async def post_collecting_ids(
    url: str, body: bytes, *, rate: float, seconds: float, connections: int, cpu: CpuClock
) -> tuple[LoadResult, list[str]]:
    """POST /notify at a constant rate (open loop) and keep the id of each 202."""
    accepted: list[str] = []
    async with client_session(connections) as session:

        async def post() -> int:
            async with session.post(url, data=body, headers=JSON_HEADERS) as response:
                answer = await response.read()
                if response.status == 202:
                    accepted.append(json.loads(answer)["id"])
                return response.status

        load = await open_loop(post, rate=rate, warmup=0, seconds=seconds, cpu=cpu)
    load.tool = f"aiohttp open loop {rate:g}/s, <= {connections} connections"
    return load, accepted


async def wait_for_rows(
    sampler: database.RowSampler, ids: list[str], worker: GatewayProcess, timeout: float
) -> float:
    """Seconds until the sampler has seen a `sent` row for every id (or `timeout` passed)."""
    started = time.monotonic()
    wanted = set(ids)
    while time.monotonic() - started < timeout:
        worker.ensure_running()
        if wanted <= sampler.seen_with("sent").keys():
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def ledger_lag_histogram(url: str) -> dict[str, float]:
    """The writer's own `wa_ledger_lag_seconds` (change `at` to commit, every status):
    count, mean and the upper bound of the bucket holding p50 and p99."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as response,
    ):
        text = await response.text()
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "wa_ledger_lag_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    figures = {"count": count, "mean_ms": total / count * 1000 if count else math.nan}
    for q in (50, 99):
        bound = next((le for le, n in sorted(buckets) if count and n >= q / 100 * count), math.nan)
        figures[f"p{q}_bucket_le_ms"] = bound * 1000
    return figures


def _lag_rows(
    load: LoadResult,
    accepted: list[str],
    sampler: database.RowSampler,
    histogram: dict[str, float],
    events: int,
    current: int,
    waited: float,
    worker_cpu: float,
) -> list[Result]:
    sent = sampler.seen_with("sent")
    lags = [sent[i].lag * 1000 for i in accepted if i in sent]
    queued = sampler.seen_with("queued")
    queued_lags = [queued[i].lag * 1000 for i in accepted if i in queued]
    lag = {
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": max(lags, default=math.nan),
    }
    at = f"@ {load.extra['offered_per_s']:g}/s"
    elapsed = load.seconds
    cross_check = (
        f"writer's wa_ledger_lag_seconds (at -> commit, all statuses, n={histogram['count']:.0f}): "
        f"mean {histogram['mean_ms']:.0f} ms, p50 <= {histogram['p50_bucket_le_ms']:g} ms, "
        f"p99 <= {histogram['p99_bucket_le_ms']:g} ms"
    )
    polling = (
        f"{len(lags)} `sent` rows, sampled every {sampler.interval * 1000:g} ms "
        f"(poll gap p99 {sampler.gap_ms(99):.0f} ms, the stamp's error bound)"
    )
    rejected = load.others(202)
    missing = len(accepted) - events
    return [
        Result(
            f"ledger lag p50, `sent` -> row {at}",
            lag["p50"],
            "ms",
            note=polling,
            details={
                "sent_lag_ms": lag,
                "queued_lag_ms": {
                    "p50": percentile(queued_lags, 50),
                    "p99": percentile(queued_lags, 99),
                    "max": max(queued_lags, default=math.nan),
                },
                "rows_seen": len(sampler.rows),
                "poll_gap_ms": {"p50": sampler.gap_ms(50), "p99": sampler.gap_ms(99)},
                "writer_histogram": histogram,
                "gateway": load.as_dict(),
                "worker_cpu_percent": round(100 * worker_cpu / elapsed, 1),
            },
        ),
        Result(
            f"ledger lag p99, `sent` -> row {at}",
            lag["p99"],
            "ms",
            target=Target("<=", 1000),
            note=cross_check,
        ),
        Result(f"ledger lag max, `sent` -> row {at}", lag["max"], "ms"),
        Result(
            "ledger: accepted without a `sent` row",
            missing,
            "",
            target=Target("<=", 0),
            note=(
                f"{len(accepted)} accepted, {events} with a `sent` event and {current} at "
                f"status sent in PostgreSQL, {waited:.1f} s after the load; CPU: gateway "
                f"{load.extra['cpu_percent']:.0f}%, worker {100 * worker_cpu / elapsed:.0f}%"
                + (f"; not 202: {rejected}" if rejected else "")
            ),
            details={
                "accepted": len(accepted),
                "sent_events": events,
                "status_sent": current,
                "non_202": rejected,
                "seconds_waited_after_load": round(waited, 2),
            },
        ),
    ]


SECTIONS: list[tuple[str, Callable[[Bench], Awaitable[list[Result]]]]] = [
    ("gateway", bench_gateway),
    ("worker drain", bench_drain),
    ("200 ms provider", bench_slow_provider),
    ("memory", bench_memory),
    ("ledger on vs. off", bench_ledger_accept),
    ("ledger lag", bench_ledger_lag),
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
        await bench.drop_databases()
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
