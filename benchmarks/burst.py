"""A burst: 100,000 accepted notifications at once, drained at the channel's pace.

The notifications are queued first, as fast as RabbitMQ confirms them, through the core
Publisher with the gateway's body and properties (what 100,000 POSTs answered 202 leave
in the queue, without spending the run's time on HTTP). Then `wa-gateway worker` starts
with the `fake` provider (no latency) and `WA_SEND_RATE` (`--burst-pace`, 2,000/s): the
queue must drain at that pace, and the worker must hold no more than its prefetch in
memory however long the queue is. Its VmRSS is sampled every 100 ms while it drains.

By default only a slice of the drain is measured (`--burst-seconds`, 15 s: 30,000 of the
100,000 at 2,000/s); the rest is deleted with the queue. The note gives how long the
whole drain takes at the measured rate. `--burst-seconds 0` drains the whole queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import rabbit
from bench import Bench, sent_at
from common import BenchError, say
from procs import GatewayProcess, rss_mb_of
from report import Result, Target

SAMPLE_EVERY = 0.1
PACE_TOLERANCE = 0.03
"""The drain rate must be within this fraction of the pace."""
RSS_GROWTH_BOUND = 1.25
"""Peak RSS while draining over RSS at the first send: the queue's length must not show."""


@dataclass
class RssSamples:
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(time.time(), MiB)"""

    def at_or_after(self, moment: float) -> float:
        return next((mib for at, mib in self.samples if at >= moment), math.nan)

    def peak_between(self, first: float, last: float) -> float:
        inside = [mib for at, mib in self.samples if first <= at <= last]
        return max(inside, default=math.nan)


async def sample_rss(pid: int, into: RssSamples) -> None:
    while True:
        with contextlib.suppress(OSError, BenchError):
            into.samples.append((time.time(), rss_mb_of(pid)))
        await asyncio.sleep(SAMPLE_EVERY)


async def bench_burst(bench: Bench) -> list[Result]:
    args = bench.args
    count, pace = args.burst_messages, args.burst_pace
    wanted = count if args.burst_seconds <= 0 else min(count, round(pace * args.burst_seconds))
    async with bench.scratch("burst") as topology:
        started = time.monotonic()
        await rabbit.prefill(bench.url, topology, count, concurrency=512)
        fill_seconds = time.monotonic() - started
        outbox = bench.workdir / "burst.outbox.jsonl"
        rss = RssSamples()
        async with bench.process(
            "burst",
            "worker",
            topology,
            WA_PROVIDER="fake",
            WA_FAKE_LATENCY="0",
            WA_SEND_RATE=f"{pace:g}",
            WA_LOG_OUTBOX=str(outbox),
        ) as process:
            sampler = asyncio.create_task(sample_rss(process.pid, rss))
            say(
                f"burst: {count} queued in {fill_seconds:.1f} s; worker draining at "
                f"WA_SEND_RATE={pace:g}, {'all' if wanted == count else wanted} measured"
            )
            try:
                await _sent_times(outbox, 1, process, timeout=30)  # sending: the span starts
                depth_before = await rabbit.queue_depth(bench.url, topology.work)
                span_started = time.time()
                times = await _sent_times(outbox, wanted, process, timeout=wanted / pace * 1.5 + 30)
                span_ended = time.time()
                # one sample after the last counted send, whatever the sampler's phase
                rss.samples.append((time.time(), rss_mb_of(process.pid)))
                depth_after = await rabbit.queue_depth(bench.url, topology.work)
            finally:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
    return _rows(
        BurstFigures(count, pace, fill_seconds, times, rss, depth_before, depth_after,
                     span_ended - span_started)
    )


async def _sent_times(path: Path, wanted: int, process: GatewayProcess, timeout: float) -> list[float]:
    """The outbox's times (wall clock) of the first `wanted` messages, read as they come."""
    deadline = time.monotonic() + timeout
    times: list[float] = []
    offset = 0
    while len(times) < wanted:
        process.ensure_running()
        if time.monotonic() > deadline:
            raise BenchError(f"burst: {len(times)}/{wanted} messages sent after {timeout:g} s")
        await asyncio.sleep(0.2)
        if not path.exists():
            continue
        with path.open("rb") as file:
            file.seek(offset)
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        offset += len(complete)
        times += [sent_at(line) for line in complete.decode("utf-8").splitlines()]
    return times[:wanted]


@dataclass
class BurstFigures:
    count: int
    pace: float
    fill_seconds: float
    times: list[float]
    rss: RssSamples
    depth_before: int
    depth_after: int
    depth_seconds: float

    @property
    def rate(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return math.nan
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def _rows(figures: BurstFigures) -> list[Result]:
    first, last = figures.times[0], figures.times[-1]
    at_first = figures.rss.at_or_after(first)
    peak = figures.rss.peak_between(first, last)
    at_end = figures.rss.at_or_after(last)
    drained = figures.depth_before - figures.depth_after
    depth_rate = drained / figures.depth_seconds if figures.depth_seconds > 0 else math.nan
    whole = len(figures.times) == figures.count
    measured = "the whole queue" if whole else (
        f"a slice: the first {len(figures.times):,} of {figures.count:,} over "
        f"{last - first:.1f} s; the rest deleted with the queue; the whole drain takes "
        f"{figures.count / figures.rate:.0f} s at this rate (extrapolated)"
    )
    details = {
        "queued": figures.count,
        "fill_seconds": round(figures.fill_seconds, 2),
        "fill_rate": round(figures.count / figures.fill_seconds, 1),
        "measured_messages": len(figures.times),
        "rate": figures.rate,
        "queue_depth_rate": depth_rate,
        "rss_mib": {"first_send": at_first, "peak": peak, "end": at_end},
        "rss_samples": len(figures.rss.samples),
    }
    return [
        Result(
            f"burst of {figures.count:,}: drain rate at WA_SEND_RATE={figures.pace:g}",
            figures.rate,
            "msg/s",
            baseline=figures.pace,
            target=Target("±", PACE_TOLERANCE),
            note=(
                f"{measured}; queued in {figures.fill_seconds:.1f} s "
                f"({figures.count / figures.fill_seconds:,.0f}/s through broker.Publisher); "
                f"queue depth fell {drained:,} in {figures.depth_seconds:.1f} s ({depth_rate:,.0f}/s)"
            ),
            details=details,
        ),
        Result(
            "burst: worker RSS peak while draining (baseline: at its first send)",
            peak,
            "MiB",
            baseline=at_first,
            target=Target("<=", RSS_GROWTH_BOUND, on_ratio=True),
            note=f"VmRSS every {SAMPLE_EVERY * 1000:g} ms; {at_end:.1f} MiB at the end of the drain measured",
        ),
        Result("burst: worker RSS at the end of the drain measured", at_end, "MiB", baseline=at_first),
    ]
