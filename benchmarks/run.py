"""`make bench`: every number next to a baseline measured in the same run, on this machine.

A gateway that does 3,000 req/s means nothing alone: RabbitMQ on this box may top
out at 3,500. So each section first measures what raw aio-pika gets from the same
broker, then the wa-gateway process doing the same job, and reports the ratio.

Sections (see benchmarks/README.md for what each number means; `--sections` picks some):
  gateway  raw confirmed publish vs. `wa-gateway serve` POST /notify, one process and
           `serve --processes 2`; p99 under that load; open-loop latency; the peers'
           figures (constants, measured 2026-11-28, not run)
  drain    raw aio-pika consumer vs. `wa-gateway worker` with the `fake` provider
  http     raw consumer vs. the worker sending through the `meta` plugin over HTTP to a
           local Meta that answers at once (meta_fake.py)
  slow     `wa-gateway worker` against a 200 ms provider vs. the prefetch/latency bound
  memory   idle and loaded RSS of `wa-gateway run`
  latency  POST -> provider at a steady 200/s, one channel and four (latency.py)
  burst    100,000 queued at once: the drain keeps the channel's pace, the worker's RSS
           stays flat (burst.py)
  ledger   `serve` with WA_LEDGER=true vs. false
  lag      time from a `sent` change to its row in PostgreSQL, and that every accepted
           notification got one

The gateway and worker sections run with WA_LEDGER=false, so that they measure the path
their single-queue baselines do; `memory` measures `run` as shipped (ledger on, SQLite),
`latency` serve + worker as deployed (ledger on, PostgreSQL).

Prints one table on stdout, writes it with details to .bench/results.json, and exits
0 when every target is met, 1 when one is missed, 2 when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import aiohttp
import burst
import database
import latency
import rabbit
from bench import Bench, outbox_span
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
from meta_fake import MetaFake
from procs import (
    GatewayProcess,
    cpu_seconds_of,
    free_port,
    local_broker_pid,
)
from prometheus_client.parser import text_string_to_metric_families
from report import Result, Target, table, write_json

from wa_gateway.models import Notification

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
IDLE_SETTLE_SECONDS = 2.0
"""Let start-up garbage be collected and lazy imports happen before reading idle RSS."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--seconds", type=float, default=8, help="length of each measured load phase")
    add("--connections", type=int, default=64, help="concurrent connections / publishers")
    add("--rate", type=float, default=1000, help="offered rate of the latency phase, req/s")
    add("--drain-messages", type=int, default=20_000, help="messages drained per consumer")
    add("--slow-messages", type=int, default=3_000, help="messages for the 200 ms provider")
    add("--slow-prefetch", type=int, default=256, help="WA_WORKER_PREFETCH for the 200 ms run")
    add("--drain-prefetch", type=int, default=64, help="prefetch of both drain consumers")
    add("--http-prefetch", type=int, default=200, help="prefetch of the worker over HTTP and its raw consumer")
    add("--latency-rate", type=float, default=200, help="offered rate of the end-to-end latency phases")
    add("--latency-seconds", type=float, default=8, help="length of each end-to-end latency phase")
    add("--burst-messages", type=int, default=100_000, help="notifications queued at once for the burst")
    add("--burst-pace", type=float, default=2000, help="the channel's WA_SEND_RATE in the burst, msg/s")
    add(
        "--burst-seconds", type=float, default=15,
        help="seconds of the burst's drain measured (0: until the queue is empty)",
    )
    add(
        "--sections", default="",
        help="comma-separated section names to run (default: all): " + ", ".join(SECTION_NAMES),
    )
    add("--ledger-rate", type=float, default=500, help="offered rate of the ledger lag phase")
    add("--ledger-seconds", type=float, default=10, help="length of the ledger lag phase")
    add(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL") or database.DEFAULT_ADMIN_URL,
        help="a PostgreSQL role that may create databases (wa_bench_<random>, dropped after)",
    )
    add("--output", type=Path, default=ROOT / ".bench" / "results.json")
    return parser.parse_args(argv)


# -- 1. gateway ----------------------------------------------------------------------------


async def bench_gateway(bench: Bench) -> list[Result]:
    """Accepted POST /notify per second vs. raw confirmed publishes, by one `serve` and by
    `serve --processes 2`; latency under that load and at a fixed rate."""
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
    two = await gateway_processes(bench, 2)
    return _gateway_rows(GatewayFigures(*raw, load, timed, two), rss)


async def gateway_processes(bench: Bench, processes: int) -> LoadResult:
    """`serve --processes N` (GATEWAY_PROCESSES=N) under the same closed loop; CPU is the
    parent's and its children's."""
    args = bench.args
    name = f"gateway{processes}"
    async with (
        bench.scratch(name) as topology,
        bench.http_process(
            name, "serve", topology, WA_PROVIDER="log", GATEWAY_PROCESSES=str(processes)
        ) as (process, url),
    ):
        say(f"gateway: `serve --processes {processes}`, closed loop, {args.seconds:g} s")
        # /readyz answered by one child: the 2 s warm-up lets the others connect too
        # (a child not yet connected answers 503, counted under non-202 if it happens later)
        return await http_closed_loop(
            url,
            bench.body,
            connections=args.connections,
            warmup=2,
            seconds=args.seconds,
            cpu=process.tree_cpu_seconds,
        )


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
    """The load phases of the gateway section, raw first."""

    raw_rate: LoadResult
    raw_latency: LoadResult
    rate: LoadResult
    latency: LoadResult
    two: LoadResult
    """`serve --processes 2`, closed loop."""


PEERS = (
    ("Express + BullMQ (Redis)", 4_854),
    ("fastify + BullMQ (Redis)", 16_743),
    ("FastAPI + Celery", 914),
)
"""Accepted requests per second of other stacks doing the gateway's job, measured once on
this machine on PEERS_MEASURED (issue 16) and kept as constants: `make bench` does not run
them. The BullMQ stacks answer once Redis took the job (no fsync'd write, no confirm);
FastAPI + Celery's figure is for its default broker set-up."""
PEERS_MEASURED = "2026-11-28"


def _cpu_note(name: str, load: LoadResult) -> str:
    return (
        f"{name} {load.extra['cpu_ms_per_op']:.2f} ms at {load.extra['cpu_percent']:.0f}%"
        if "cpu_ms_per_op" in load.extra
        else f"{name} -"
    )


def _gateway_rows(figures: GatewayFigures, rss: float) -> list[Result]:
    raw, load, timed, two = figures.raw_rate, figures.rate, figures.latency, figures.two
    at = f"@ {timed.extra['offered_per_s']:g} req/s open loop"
    extra = timed.extra
    lag = (
        f"vs. raw publish at the same rate; answered {extra['completed_per_s']:.0f}/s; "
        f"client send lag p99 {extra['send_lag_p99_ms']:.1f} ms (included), "
        f"client CPU {extra['client_cpu_percent']:.0f}%, gateway CPU {extra['cpu_percent']:.0f}%"
    )
    cpu = "CPU/op: " + ", ".join(
        (_cpu_note("gateway", load), _cpu_note("raw publisher", raw))
    )
    rejected = {
        **load.others(202),
        **{f"{k} (latency phase)": v for k, v in timed.others(202).items()},
        **{f"{k} (2 processes)": v for k, v in two.others(202).items()},
    }
    express = PEERS[0][1]
    versus = (
        f"{load.rate(202) / express:.2f}x Express + BullMQ's {express:,} req/s "
        f"(measured {PEERS_MEASURED}, not run)"
    )
    connections = load.tool.rpartition("-c")[2] if "-c" in load.tool else "64"
    return [
        Result(
            "gateway accepted POST /notify, 1 process",
            load.rate(202),
            "req/s",
            baseline=raw.rate("confirmed"),
            target=Target(">=", 0.45, on_ratio=True),
            note=f"{load.tool} vs. raw {raw.tool}; {cpu}; {versus}",
            details={"gateway": load.as_dict(), "raw_publish": raw.as_dict()},
        ),
        Result(
            "gateway accepted POST /notify, `serve --processes 2`",
            two.rate(202),
            "req/s",
            baseline=raw.rate("confirmed"),
            target=Target(">=", 0.6, on_ratio=True),
            note=(
                f"{two.tool}; CPU/op of the parent and its 2 children "
                f"{two.extra.get('cpu_ms_per_op', math.nan):.2f} ms at "
                f"{two.extra.get('cpu_percent', math.nan):.0f}%; p99 "
                f"{two.latencies_ms.get('p99', math.nan):.1f} ms; "
                f"{two.rate(202) / express:.2f}x Express + BullMQ"
            ),
            details={"gateway_2_processes": two.as_dict()},
        ),
        Result(
            f"gateway p99 @ {connections} connections, closed loop, 1 process",
            load.latencies_ms.get("p99", math.nan),
            "ms",
            target=Target("<=", 20),
            note=f"p50 {load.latencies_ms.get('p50', math.nan):.1f} ms; {load.tool}",
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
        *(
            Result(
                f"peer, not run: {peer}",
                rate,
                "req/s",
                note=f"accepted/s measured on this machine on {PEERS_MEASURED} (issue 16); a constant",
            )
            for peer, rate in PEERS
        ),
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


async def bench_drain(bench: Bench) -> list[Result]:
    """Worker drain rate vs. a raw consumer doing nothing but ack, same queue kind and prefetch."""
    count, prefetch = bench.args.drain_messages, bench.args.drain_prefetch
    baseline = await raw_consumer(bench, "rawdrain", count, prefetch)
    span = await worker_drain(bench, "drain", count, prefetch, latency=0)
    return [versus_raw_consumer(f"worker drain, fake 0 ms, prefetch {prefetch}", span, baseline, count, 0.6)]


async def raw_consumer(
    bench: Bench,
    name: str,
    count: int,
    prefetch: int,
    make: Callable[[], Notification] = rabbit.sample_notification,
) -> Span:
    """The baseline of the worker rows: a raw aio-pika consumer draining `count` messages
    of `make()` at `prefetch`, from a scratch queue of the same kind."""
    async with bench.scratch(name) as raw:
        await rabbit.prefill(bench.url, raw, count, make=make)
        return await rabbit.raw_drain(
            bench.url, raw.work, count=count, prefetch=prefetch, timeout=max(60.0, count / 100)
        )


def versus_raw_consumer(title: str, span: Span, baseline: Span, count: int, ratio: float) -> Result:
    """A worker's rate against the raw consumer's, with both times and CPU per message."""
    return Result(
        title,
        span.rate,
        "msg/s",
        baseline=baseline.rate,
        target=Target(">=", ratio, on_ratio=True),
        note=(
            f"{count} msgs: worker {span.seconds:.2f} s, raw consumer {baseline.seconds:.2f} s; "
            f"CPU/msg: worker {span.cpu_ms_per_event:.2f} ms, raw {baseline.cpu_ms_per_event:.2f} ms"
        ),
        details={"worker": span.as_dict(), "raw_consumer": baseline.as_dict()},
    )


async def bench_worker_http(bench: Bench) -> list[Result]:
    """The worker sending through the real `meta` plugin over HTTP to a local Meta that answers
    at once, vs. a raw consumer at the same prefetch: what the HTTP path costs per message.

    Raw, worker, worker, raw, each on its own queue, and the two of each added up: one pair
    of runs read anywhere from 0.43 to 0.67 on this machine as RabbitMQ's pace drifted."""
    count, prefetch = bench.args.drain_messages, bench.args.http_prefetch
    person = rabbit.person_notification
    raw_first = await raw_consumer(bench, "rawhttp1", count, prefetch, make=person)
    worker = [await worker_over_http(bench, f"http{run}", count, prefetch) for run in (1, 2)]
    raw_last = await raw_consumer(bench, "rawhttp2", count, prefetch, make=person)
    span, baseline = Span.joined(worker), Span.joined([raw_first, raw_last])
    title = f"worker over HTTP (meta plugin, local Meta), prefetch {prefetch}"
    result = versus_raw_consumer(title, span, baseline, 2 * count, 0.45)
    pairs = zip((raw_first, raw_last), worker, strict=True)
    result.note += "; runs raw/worker/worker/raw, ratio by pair: " + ", ".join(
        f"{w.rate / r.rate:.2f}" for r, w in pairs
    )
    return [result]


async def worker_over_http(bench: Bench, name: str, count: int, prefetch: int) -> Span:
    """`wa-gateway worker` draining `count` person notifications through the `meta` plugin."""
    async with bench.scratch(name) as topology, MetaFake().serving() as meta:
        await rabbit.prefill(bench.url, topology, count, make=rabbit.person_notification)
        async with bench.process(
            name,
            "worker",
            topology,
            WA_PROVIDER="meta",
            WA_API_KEY="bench-meta-token-0123456789",
            WA_API_URL=meta.url,
            META_PHONE_NUMBER_ID="123456789012345",
            # Meta declares 80 msg/s; the capacity of the path is measured, not the pacing
            WA_SEND_RATE="1000000",
            WA_WORKER_PREFETCH=str(prefetch),
            **{f"WA_CONTACT_{rabbit.PERSON.upper()}_NUMBER": rabbit.PHONE},
        ) as process:
            say(f"{name}: worker sending {count} messages to the local Meta, prefetch {prefetch}")
            span = await arrivals_span(meta, count, process, timeout=max(60.0, count / 100))
        left = await rabbit.queue_depth(bench.url, topology.work)
    if left:
        bench.problems.append(f"{name}: {left} messages back in {topology.work} after the drain")
    if meta.bad_requests:
        bench.problems.append(f"{name}: the local Meta got {meta.bad_requests} unreadable requests")
    return span


async def arrivals_span(meta: MetaFake, count: int, process: GatewayProcess, timeout: float) -> Span:
    """Wait until the local Meta got `count` requests; their arrival times give the span
    (start-up not counted), the worker's CPU is read from the first to the last."""
    deadline = time.monotonic() + timeout
    cpu_first = math.nan
    while len(meta.arrivals) < count:
        process.ensure_running()
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name}: {len(meta.arrivals)}/{count} requests after {timeout:g} s")
        await asyncio.sleep(0.1)
        if meta.arrivals and math.isnan(cpu_first):
            cpu_first = process.cpu_seconds()
    cpu = process.cpu_seconds() - cpu_first
    return Span(len(meta.arrivals), meta.arrivals[0], meta.arrivals[count - 1], cpu)


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


SECTIONS: list[tuple[str, str, Callable[[Bench], Awaitable[list[Result]]]]] = [
    ("gateway", "gateway", bench_gateway),
    ("drain", "worker drain", bench_drain),
    ("http", "worker over HTTP", bench_worker_http),
    ("slow", "200 ms provider", bench_slow_provider),
    ("memory", "memory", bench_memory),
    ("latency", "end-to-end latency", latency.bench_latency),
    ("burst", "burst of notifications", burst.bench_burst),
    ("ledger", "ledger on vs. off", bench_ledger_accept),
    ("lag", "ledger lag", bench_ledger_lag),
]
SECTION_NAMES = [name for name, _, _ in SECTIONS]


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
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()] or SECTION_NAMES
    try:
        for name, title, section in SECTIONS:
            if name in chosen:
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
    unknown = {n.strip() for n in args.sections.split(",") if n.strip()} - set(SECTION_NAMES)
    if unknown:
        print(f"bench: error: no section {', '.join(sorted(unknown))} (sections: "
              f"{', '.join(SECTION_NAMES)})", file=sys.stderr)
        return 2
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
