"""The ledger on the real PostgreSQL (`make test` makes sure it answers): each test gets
a database of its own, created and dropped around it.

`db upgrade` from an empty database; a process on an empty one stops with one line
saying to run it; two upgrades at once take turns; the CLI migrates, then prunes; the
CLI against a port where nothing answers is one line, exit 2.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import Base
from wa_gateway.ledger.schema import SchemaMismatch, current_revision, head, open_ledger, upgrade


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """This test's own database (conftest's postgres_url), without schema."""
    return postgres_url


def wa_gateway(cwd: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "db", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "DATABASE_URL": database_url},
    )


async def test_upgrade_from_an_empty_database_creates_the_schema_the_models_describe(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        assert await current_revision(engine) is None
        done = await upgrade(engine, database_url)
        assert (done.before, done.after) == (None, head())
        async with engine.connect() as connection:
            tables, diff = await connection.run_sync(
                lambda sync: (
                    set(inspect(sync).get_table_names()),
                    compare_metadata(MigrationContext.configure(sync), Base.metadata),
                )
            )
        assert tables == {"alembic_version", "notifications", "notification_events"}
        assert diff == []
        again = await upgrade(engine, database_url)
        assert (again.before, again.after) == (head(), head())
    finally:
        await engine.dispose()


async def test_a_process_on_an_empty_database_stops_with_one_line_saying_to_upgrade(
    database_url: str,
) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        async with open_ledger(database_url):
            pass
    [line] = str(caught.value).splitlines()
    assert line.endswith("has no schema: run `wa-gateway db upgrade`")
    engine = create_engine(database_url)
    try:
        assert await current_revision(engine) is None  # PostgreSQL is never migrated by a process
    finally:
        await engine.dispose()


async def test_two_upgrades_at_once_take_turns(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(upgrade(engine, database_url) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted((r.before or "", r.after) for r in results) == [("", head()), (head(), head())]


async def test_db_upgrade_then_a_process_starts_and_db_prune_deletes_old_rows(
    database_url: str, tmp_path: Path
) -> None:
    upgraded = await asyncio.to_thread(wa_gateway, tmp_path, database_url, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"schema upgraded from empty to revision {head()}")

    async with open_ledger(database_url):
        pass  # the schema is this package's: the process starts

    now = datetime.now(UTC)
    connection = await asyncpg.connect(database_url)
    try:
        for id_, age in (("old", 100), ("new", 1)):
            created = now - timedelta(days=age)
            await connection.execute(
                'INSERT INTO notifications (id, channel, provider, "to", target_kind, target_address,'
                " status, attempts, created_at, updated_at)"
                " VALUES ($1, 'default', 'log', 'logistic', 'group', '1@g.us', 'sent', 1, $2, $2)",
                id_, created,
            )
            await connection.execute(
                "INSERT INTO notification_events (notification_id, at, status, key)"
                " VALUES ($1, $2, 'queued', $3), ($1, $2, 'sent', $4)",
                id_, created, f"{id_}:queued", f"{id_}:sent",
            )
        pruned = await asyncio.to_thread(wa_gateway, tmp_path, database_url, "prune", "--days", "30")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.startswith("pruned 1 notification(s) and 2 event(s) created before ")
        left = await connection.fetch("SELECT notification_id FROM notification_events")
        assert {row["notification_id"] for row in left} == {"new"}
        assert await connection.fetchval("SELECT count(*) FROM notifications") == 1
    finally:
        await connection.close()


async def test_the_cli_against_a_port_where_nothing_answers_is_one_line_exit_2(
    tmp_path: Path,
) -> None:
    url = "postgresql://postgres:secret@127.0.0.1:1/wa"
    for command in (("upgrade",), ("prune",)):
        result = await asyncio.to_thread(wa_gateway, tmp_path, url, *command)
        assert result.returncode == 2, result.stdout
        [line] = result.stderr.splitlines()
        assert line.startswith("wa-gateway: error: the ledger database at postgresql://postgres:***@127.0.0.1:1/wa")
        assert "secret" not in line


async def test_a_missing_database_is_one_line_exit_2(database_url: str, tmp_path: Path) -> None:
    missing = database_url.rsplit("/", 1)[0] + "/wa_no_such_database"
    result = await asyncio.to_thread(wa_gateway, tmp_path, missing, "upgrade")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert 'database "wa_no_such_database" does not exist' in line


OLD_ROWS = """
INSERT INTO notifications (id, channel, provider, "to", target_kind, target_address, status,
    provider_message_id, attempts, created_at, updated_at)
VALUES ('n-1', 'default', 'meta', 'budi', 'phone', '+6281234567890', 'sent', 'wamid.1', 1, now(), now());
INSERT INTO notification_events (notification_id, at, status) VALUES ('n-1', now(), 'queued');
INSERT INTO notification_events (notification_id, at, status) VALUES ('n-1', now(), 'sent');
"""


async def test_upgrade_from_the_previous_revision_keeps_the_rows_and_the_writer_goes_on(
    database_url: str, tmp_path: Path
) -> None:
    from wa_gateway.ledger.apply import apply_changes
    from wa_gateway.ledger.changes import StatusChange
    from wa_gateway.ledger.queries import get_notification

    engine = create_engine(database_url)
    try:
        await upgrade(engine, database_url, "0001")
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(OLD_ROWS)
        finally:
            await connection.close()
        # a process of this release on the old schema stops with one line
        process = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "worker"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "DATABASE_URL": database_url, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
        )
        assert process.returncode == 2
        [line] = process.stderr.strip().splitlines()
        assert line.endswith(f"is at schema revision 0001, this wa-gateway needs {head()}: run `wa-gateway db upgrade`")

        done = await upgrade(engine, database_url)

        assert (done.before, done.after) == ("0001", head())
        receipt = StatusChange(key="r:meta:wamid.1:delivered", status="delivered", provider="meta",
                               provider_message_id="wamid.1")
        applied = await apply_changes(engine, [receipt])
        assert applied.recorded == 1 and applied.unresolved == []
        found = await get_notification(engine, "n-1")
        assert found is not None
        assert [e["status"] for e in found["events"]] == ["queued", "sent", "delivered"]
        assert found["status"] == "delivered"
    finally:
        await engine.dispose()
