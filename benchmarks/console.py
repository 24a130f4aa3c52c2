"""The operator console's pages with 100,000 notifications in the ledger: `make bench-console`.

For SQLite (a file) and for PostgreSQL (a database `wa_bench_console_<random>`, dropped
after): the schema is migrated, 100,000 notifications with about three status changes
each are loaded with bulk inserts, all within the last 24 hours (the overview's chart
then counts every one of them: the worst case), on two channels, a fifth of them to raw
phone numbers. A gateway with the console on runs in this process on a free port with
the real RabbitMQ (a scratch queue prefix, deleted after) and `--dead` dead letters in
its dead-letter queue. aiohttp's client signs in and asks each page `--requests` times,
one request at a time; the table gives p50 and p99 per page and whether each is under
the 300 ms the issue asks for. Exit status: 0 all under, 1 one is not, 2 cannot run.

    .venv/bin/python benchmarks/console.py                      # what make bench-console runs
    .venv/bin/python benchmarks/console.py --notifications 20000 --requests 20   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import rabbit
from aiohttp import web
from common import BenchError, percentile, say
from sqlalchemy import insert, text

from wa_gateway.gateway import SERVER_OPTIONS, make_app
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import NotificationEvent, NotificationRecord
from wa_gateway.ledger.schema import upgrade
from wa_gateway.models import Notification, Target
from wa_gateway.plugins import make_plugin_manager
from wa_gateway.services import Services
from wa_gateway.settings import load_settings

BUDGET_MS = 300.0
ADMIN_KEY = "bench-console-" + secrets.token_urlsafe(18)
NUMBERS = [f"+62812{n:08d}" for n in range(500)]
ALIASES = ["logistic", "purchase", "management", "budi", "siti"]
CHANNELS = ("people", "groups")
# (final status, its changes after `queued`, share)
LIVES = [
    ("delivered", ["sent", "delivered"], 0.55),
    ("read", ["sent", "delivered", "read"], 0.15),
    ("sent", ["sent"], 0.12),
    ("failed", ["sent", "failed"], 0.06),
    ("dead", ["retrying", "dead"], 0.05),
    ("retrying", ["retrying"], 0.02),
    ("queued", [], 0.05),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60, help="timed requests per page (after 3 to warm up)")
    parser.add_argument("--dead", type=int, default=100, help="dead letters in the dead-letter queue")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL")
                        or os.environ.get("POSTGRES_TEST_URL") or "postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a role that may create databases (wa_bench_console_<random>, dropped after)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="one database only")
    args = parser.parse_args()
    try:
        rows = asyncio.run(run(args))
    except BenchError as exc:
        print(f"bench-console: error: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0 if all(row.p99 < BUDGET_MS for row in rows if row.page) else 1


@dataclass(frozen=True)
class Row:
    database: str
    name: str
    p50: float
    p99: float
    status: int
    page: bool = True
    """A page the 300 ms is asked of (not an action)."""


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="wa-bench-console-") as scratch:
        if args.only in (None, "sqlite"):
            url = f"sqlite:///{Path(scratch) / 'ledger.db'}"
            rows += await one_database("sqlite", url, args)
        if args.only in (None, "postgresql"):
            async with postgres_database(args.postgres_url) as url:
                rows += await one_database("postgresql", url, args)
    return rows


async def one_database(name: str, url: str, args: argparse.Namespace) -> list[Row]:
    say(f"{name}: migrating and loading {args.notifications:,} notifications")
    engine = create_engine(url)
    try:
        await upgrade(engine, url)
        started = time.monotonic()
        dead_ids, sample_id = await load(engine, args.notifications)
        say(f"{name}: loaded in {time.monotonic() - started:.1f} s")
        if engine.dialect.name == "postgresql":  # what autovacuum does in the minute after a load
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    prefix = f"benchc{secrets.token_hex(4)}"
    settings = load_settings(
        None, amqp_url=args.amqp_url, wa_queue_prefix=prefix, database_url=url,
        gateway_admin_keys=[ADMIN_KEY], wa_retry_delays=[5.0],
        raw_env={"WA_CHANNELS": ",".join(CHANNELS), "WA_CHANNEL_PEOPLE_PROVIDER": "log",
                 "WA_CHANNEL_GROUPS_PROVIDER": "log"},
    )
    services = Services(settings, make_plugin_manager(load_entry_points=False))
    await services.check_ledger()
    runner = web.AppRunner(make_app(services), **SERVER_OPTIONS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            await services.broker.wait_connected(timeout=15)
        except TimeoutError:
            raise BenchError(f"RabbitMQ is not reachable at {urlsplit(args.amqp_url).netloc.rpartition('@')[2]}") from None
        await dead_letters(services, dead_ids[: args.dead])
        return await time_pages(name, f"http://127.0.0.1:{port}", sample_id, args.requests, min(10, args.dead))
    finally:
        await runner.cleanup()
        await delete_queues(args.amqp_url, services)


async def load(engine: Any, count: int) -> tuple[list[str], str]:
    """`count` notifications over the last 24 hours with their changes, in bulk; the ids of
    the dead ones, and one id with a long life for the timeline page."""
    rng = random.Random(14)
    now = datetime.now(UTC)
    lives = [life for life in LIVES for _ in range(int(life[2] * 100))]
    dead: list[str] = []
    sample = ""
    notifications: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    async with engine.begin() as connection:
        for index in range(count):
            created = now - timedelta(seconds=rng.uniform(60, 24 * 3600 - 60))
            status, changes, _ = rng.choice(lives)
            notification_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            channel = CHANNELS[index % 2]
            to = rng.choice(NUMBERS) if rng.random() < 0.2 else rng.choice(ALIASES)
            failing = status in ("failed", "dead", "retrying")
            code = rng.choice(["131026", "131047", "63016", "470"]) if failing else None
            message = f"(#{code}) Message undeliverable to {rng.choice(NUMBERS)}" if failing else None
            notifications.append({
                "id": notification_id, "channel": channel, "provider": "log", "to": to,
                "target_kind": "person", "target_address": rng.choice(NUMBERS), "event": None,
                "status": status, "provider_message_id": f"wamid.{notification_id[:12]}" if changes[:1] == ["sent"] else None,
                "attempts": 1 if changes else 0, "error_code": code, "error_message": message,
                "created_at": created, "updated_at": created + timedelta(seconds=len(changes) * 3),
                "callback_url": None,
            })
            for step, change in enumerate(["queued", *changes]):
                events.append({
                    "notification_id": notification_id, "at": created + timedelta(seconds=step * 3),
                    "status": change, "channel": channel if change in ("queued", "retrying", "dead", "sent") else None,
                    "provider": None if change == "queued" else "log",
                    "code": code if change in ("failed", "dead", "retrying") else None,
                    "message": message if change in ("failed", "dead", "retrying") else None,
                    "attempt": 1 if change in ("sent", "retrying", "dead") else None,
                    "key": f"{notification_id}:{change}:{step}",
                })
            if status == "dead":
                dead.append(notification_id)
            if status == "read" and not sample:
                sample = notification_id
            if len(notifications) >= 5000:
                await _flush(connection, notifications, events)
        await _flush(connection, notifications, events)
    return dead, sample


async def _flush(connection: Any, notifications: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    if notifications:
        await connection.execute(insert(NotificationRecord), notifications)
        await connection.execute(insert(NotificationEvent), events)
    notifications.clear()
    events.clear()


async def dead_letters(services: Services, ids: list[str]) -> None:
    """Dead letters as the worker leaves them: the body unchanged, the reason in headers."""
    for notification_id in ids:
        body = Notification(id=notification_id, to="budi", target=Target(kind="phone", address=NUMBERS[0]),
                            text="Pesanan siap", channel="people").to_bytes()
        await services.publisher.publish(
            body, message_id=notification_id, exchange=services.topology.dead, routing_key="",
            headers={"x-error": f"(#131026) Message undeliverable to {NUMBERS[1]}", "x-attempts": 1,
                     "x-provider": "log", "x-channel": "people", "x-provider-code": "131026",
                     "x-first-failed-at": datetime.now(UTC).isoformat()},
        )


async def time_pages(database: str, base: str, sample_id: str, requests: int, replays: int) -> list[Row]:
    rows = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, base)
        first = await (await http.get(f"{base}/admin/notifications")).text()
        following = re.search(r'<a href="([^"]+)" rel="next">', first)
        since = (datetime.now(UTC) - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
        until = (datetime.now(UTC) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M")
        pages = [
            ("overview (chart, queues, breakers)", "/admin/"),
            ("notifications, newest 50", "/admin/notifications"),
            ("notifications, next page (cursor)", following.group(1).replace("&amp;", "&") if following else "/admin/notifications"),
            ("notifications, status=dead", "/admin/notifications?status=dead"),
            ("notifications, channel + alias", "/admin/notifications?channel=people&to=budi"),
            ("notifications, 1 h window", f"/admin/notifications?since={since}&until={until}"),
            ("notifications, search by id", f"/admin/notifications?id={sample_id}"),
            ("one notification's timeline", f"/admin/notifications/{sample_id}"),
            ("dead letters", "/admin/dead-letters"),
            ("channels (last error each)", "/admin/channels"),
        ]
        started = time.perf_counter()
        async with http.get(f"{base}/admin/") as answer:  # counts the whole day once
            await answer.read()
        cold = (time.perf_counter() - started) * 1000
        rows.append(Row(database, "overview, first view (1 request)", cold, cold, answer.status))
        say(f"{database}: overview, first view: {cold:.1f} ms")
        for name, path in pages:
            timings, status = [], 0
            for attempt in range(requests + 3):
                started = time.perf_counter()
                async with http.get(f"{base}{path}", allow_redirects=False) as answer:
                    await answer.read()
                    status = answer.status
                if attempt >= 3:
                    timings.append((time.perf_counter() - started) * 1000)
                if status >= 400:
                    raise BenchError(f"{database}: {path} answered {status}")
            rows.append(Row(database, name, percentile(timings, 50), percentile(timings, 99), status))
            say(f"{database}: {name}: p50 {rows[-1].p50:.1f} ms, p99 {rows[-1].p99:.1f} ms")
        rows.append(await time_replays(database, http, base, replays))
    return rows


async def time_replays(database: str, http: aiohttp.ClientSession, base: str, count: int) -> Row:
    """Replay one dead letter at a time, by id, from the head of the table: an action that
    calls `dlq.replay`, which reads the whole dead-letter queue to find it."""
    timings, status = [], 0
    for _ in range(count):
        html = await (await http.get(f"{base}/admin/dead-letters")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        wanted = re.search(r'name="id" value="([^"]+)"', html)
        if csrf is None or wanted is None:
            break
        started = time.perf_counter()
        async with http.post(f"{base}/admin/dead-letters/replay", data={"csrf": csrf.group(1), "id": wanted.group(1)},
                             allow_redirects=False) as answer:
            await answer.read()
            status = answer.status
        timings.append((time.perf_counter() - started) * 1000)
        if status != 303:
            raise BenchError(f"{database}: replaying a dead letter answered {status}")
    row = Row(database, "replay one by id (an action)", percentile(timings, 50), percentile(timings, 99),
              status, page=False)
    say(f"{database}: {row.name}: p50 {row.p50:.1f} ms, p99 {row.p99:.1f} ms")
    return row


async def sign_in(http: aiohttp.ClientSession, base: str) -> None:
    form = await (await http.get(f"{base}/admin/sign-in")).text()
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    if match is None:
        raise BenchError("the console's sign-in form has no CSRF token")
    answer = await http.post(f"{base}/admin/sign-in", data={"csrf": match.group(1), "key": ADMIN_KEY},
                             allow_redirects=False)
    if answer.status != 303:
        raise BenchError(f"signing in to the console answered {answer.status}")


async def delete_queues(amqp_url: str, services: Services) -> None:
    """The run's queues and exchanges (rabbit.delete_topology); a broker that is gone by now
    must not turn the run's table into a traceback."""
    with contextlib.suppress(Exception):
        await rabbit.delete_topology(amqp_url, services.topology)


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    import asyncpg

    name = f"wa_bench_console_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL does not answer at {urlsplit(admin_url).hostname} ({exc}); "
                         "make services starts it, or give --postgres-url") from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def table(rows: list[Row]) -> str:
    lines = [f"{'database':<11} {'page':<36} {'p50 ms':>8} {'p99 ms':>8}  p99 under {BUDGET_MS:.0f} ms"]
    for row in rows:
        verdict = "yes" if row.p99 < BUDGET_MS else "NO"
        lines.append(f"{row.database:<11} {row.name:<36} {row.p50:>8.1f} {row.p99:>8.1f}  "
                     f"{verdict if row.page else verdict.lower() + ' (not a page)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
