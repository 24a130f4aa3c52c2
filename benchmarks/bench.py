"""What every section shares: the run's settings, scratch queues and database, its processes,
and reading the `fake` provider's outbox files (the times the worker sent each message).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiormq
import asyncpg
import database
import rabbit
from common import BenchError, Span, say
from procs import GatewayProcess, StopReport, free_port, run_command, running
from report import Result, failed_row

from wa_gateway.topology import Topology


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

    def scratch(
        self, name: str, channels: tuple[str, ...] = ("default",)
    ) -> contextlib.AbstractAsyncContextManager[Topology]:
        """Queues named `bench<random>-<name>.*` (each channel's too), deleted when the block ends."""
        topology = rabbit.bench_topology(f"{self.prefix}-{name}", channels)
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
    return Span(len(lines), sent_at(lines[0]), sent_at(lines[-1]), cpu)


def sent_at(line: str) -> float:
    """The `time` the provider wrote into an outbox line, as a Unix timestamp."""
    try:
        return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(
            f"an outbox line has no ISO `time` field ({exc!r}): {line[:120]}"
        ) from None
