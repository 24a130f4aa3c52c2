"""The PostgreSQL side: a scratch database for the ledger, and a sampler that sees its rows arrive.

The ledger stores when a status change happened (`notification_events.at`, set by the
worker) but not when its row was committed. The sampler supplies the second time from
outside: every `interval` it asks for the rows after the last one it saw and stamps each
with the moment the answer came back. A row committed just after a poll is stamped at
the next one, so the lag it gives is high by at most one interval plus a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from common import BenchError, percentile, say

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""A role that may create databases, and a database to connect to while doing it (trust
auth on the development machine; `--postgres-url` / BENCH_POSTGRES_URL for another)."""
POLL_INTERVAL = 0.02


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.hostname}:{parts.port or 5432}{parts.path}"


async def _admin(admin_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(admin_url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {shown_url(admin_url)} ({type(exc).__name__}: "
            f"{exc}); start it (make services) or pass --postgres-url"
        ) from None


async def create_database(admin_url: str) -> tuple[str, str]:
    """A new empty database `wa_bench_<random>`: its name and its URL (same role and host)."""
    name = f"wa_bench_{secrets.token_hex(4)}"
    admin = await _admin(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    say(f"created PostgreSQL database {name}")
    return name, urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def drop_database(admin_url: str, name: str) -> None:
    admin = await _admin(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Seen:
    """One event row: its notification, status, `at` (Unix s) and when the sampler saw it."""

    notification_id: str
    status: str
    at: float
    seen: float

    @property
    def lag(self) -> float:
        return self.seen - self.at


@dataclass
class RowSampler:
    """Polls notification_events for new rows every `interval`; see the module docstring.

    One ledger writer commits one batch at a time, so the ids (a sequence) become
    visible in order and `id > last` misses nothing; with several writers a lower id
    could commit after a higher one is seen, and `unseen` (checked at the end against
    the table itself) would show it.
    """

    url: str
    interval: float = POLL_INTERVAL
    rows: list[Seen] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    """Seconds between the answers of consecutive polls: the stamp's resolution."""
    _last_id: int = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RowSampler]:
        connection = await asyncpg.connect(self.url, timeout=5)
        try:
            self._last_id = await connection.fetchval(
                "SELECT coalesce(max(id), 0) FROM notification_events"
            )
            task = asyncio.create_task(self._poll(connection), name="row-sampler")
            try:
                yield self
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await connection.close()

    async def _poll(self, connection: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        answered = None
        while True:
            records = await connection.fetch(
                "SELECT id, notification_id, status, at FROM notification_events "
                "WHERE id > $1 ORDER BY id",
                self._last_id,
            )
            now = time.time()
            if answered is not None:
                self.gaps.append(now - answered)
            answered = now
            for record in records:
                self.rows.append(
                    Seen(record["notification_id"], record["status"], record["at"].timestamp(), now)
                )
                self._last_id = record["id"]
            tick += self.interval
            late = loop.time() - tick
            if late > 0:  # the query took longer than an interval: go on from now
                tick += self.interval * (late // self.interval + 1)
            await asyncio.sleep(tick - loop.time())

    def seen_with(self, status: str) -> dict[str, Seen]:
        """The first row of each notification with `status`, by notification id."""
        found: dict[str, Seen] = {}
        for row in self.rows:
            if row.status == status:
                found.setdefault(row.notification_id, row)
        return found

    def gap_ms(self, q: float) -> float:
        return percentile(self.gaps, q) * 1000


async def count_rows(url: str, status: str, ids: list[str]) -> tuple[int, int]:
    """(event rows with `status`, notifications whose row has that status now) among `ids`,
    read from the tables themselves, not from what the sampler saw."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        events = await connection.fetchval(
            "SELECT count(DISTINCT notification_id) FROM notification_events "
            "WHERE status = $1 AND notification_id = ANY($2::text[])",
            status,
            ids,
        )
        current = await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE status = $1 AND id = ANY($2::text[])",
            status,
            ids,
        )
    finally:
        await connection.close()
    return events, current
