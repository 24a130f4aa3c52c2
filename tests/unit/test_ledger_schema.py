"""The ledger on SQLite (a file in tmp_path): the migrations create both tables and their
indexes from an empty database and agree with the models, upgrading twice changes
nothing, a process opening the ledger migrates SQLite itself, prune deletes what is old
with its events and keeps the rest, and a DATABASE_URL it cannot use is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from wa_gateway.errors import ConfigError
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import Base, NotificationEvent, NotificationRecord
from wa_gateway.ledger.prune import prune
from wa_gateway.ledger.schema import SchemaMismatch, current_revision, head, open_ledger, upgrade
from wa_gateway.ledger.urls import async_database_url
from wa_gateway.settings import load_settings

INDEXES = {
    "notifications": {
        "ix_notifications_status_created_at": ["status", "created_at"],
        "ix_notifications_channel_created_at": ["channel", "created_at"],
        "ix_notifications_to_created_at": ["to", "created_at"],
        "ix_notifications_created_at_id": ["created_at", "id"],
        "ix_notifications_provider_message_id": ["provider_message_id", "provider"],
    },
    "notification_events": {
        "ix_notification_events_notification_id_at": ["notification_id", "at"],
        "ix_notification_events_status_at": ["status", "at"],
        "uq_notification_events_key": ["key"],
    },
}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    yield engine
    await engine.dispose()


def _schema(connection):  # type: ignore[no-untyped-def]
    found = inspect(connection)
    return {
        table: {index["name"]: index["column_names"] for index in found.get_indexes(table)}
        for table in found.get_table_names()
    }


async def test_upgrade_from_an_empty_database_creates_both_tables_and_their_indexes(
    engine: AsyncEngine, url: str
) -> None:
    assert await current_revision(engine) is None

    done = await upgrade(engine, url)

    assert (done.before, done.after) == (None, head())
    async with engine.connect() as connection:
        schema = await connection.run_sync(_schema)
    assert set(schema) == {"alembic_version", "notifications", "notification_events"}
    for table, indexes in INDEXES.items():
        assert schema[table] == indexes


async def test_the_migrations_and_the_models_agree(engine: AsyncEngine, url: str) -> None:
    await upgrade(engine, url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []


async def test_upgrade_twice_changes_nothing(engine: AsyncEngine, url: str) -> None:
    await upgrade(engine, url)
    await _add(engine, "n-1", datetime.now(UTC))

    again = await upgrade(engine, url)

    assert (again.before, again.after) == (head(), head())
    assert await _ids(engine) == {"n-1"}


async def test_a_process_opening_sqlite_creates_and_migrates_it(url: str, tmp_path: Path) -> None:
    async with open_ledger(url) as engine:
        assert await current_revision(engine) == head()
    assert (tmp_path / "ledger.db").is_file()


async def test_sqlite_newer_than_the_package_stops_with_one_line(
    engine: AsyncEngine, url: str
) -> None:
    await upgrade(engine, url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
    with pytest.raises(SchemaMismatch) as caught:
        async with open_ledger(url):
            pass
    [line] = str(caught.value).splitlines()
    assert "schema revision ffff, which this wa-gateway does not know" in line


async def test_prune_deletes_old_notifications_with_their_events_and_keeps_new_ones(
    engine: AsyncEngine, url: str
) -> None:
    await upgrade(engine, url)
    now = datetime.now(UTC)
    await _add(engine, "old-1", now - timedelta(days=91), events=3)
    await _add(engine, "old-2", now - timedelta(days=400), events=1)
    await _add(engine, "new-1", now - timedelta(days=89), events=2)
    await _add(engine, "new-2", now, events=1)

    pruned = await prune(engine, 90, now=now, batch=1)  # one per batch: the loop runs

    assert (pruned.notifications, pruned.events) == (2, 4)
    assert pruned.before == now - timedelta(days=90)
    assert await _ids(engine) == {"new-1", "new-2"}
    async with async_sessionmaker(engine)() as session:
        left = (await session.scalars(select(NotificationEvent.notification_id))).all()
    assert sorted(left) == ["new-1", "new-1", "new-2"]
    again = await prune(engine, 90, now=now)
    assert (again.notifications, again.events) == (0, 0)


async def test_times_come_back_aware_and_in_utc(engine: AsyncEngine, url: str) -> None:
    await upgrade(engine, url)
    jakarta = datetime(2025, 1, 2, 10, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Jakarta"))
    await _add(engine, "n-1", jakarta)
    async with async_sessionmaker(engine)() as session:
        record = await session.get(NotificationRecord, "n-1")
    assert record is not None
    assert record.created_at == datetime(2025, 1, 2, 10, 0, tzinfo=UTC)
    assert record.created_at.tzinfo == UTC


@pytest.mark.parametrize(
    "bad",
    ["mysql://u:secret@db/x", "sqlite://", "postgresql://u:secret@/x", "postgresql://h:port/x", "nonsense"],
)
def test_an_unsupported_database_url_is_one_line(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_engine(bad)
    [line] = str(caught.value).splitlines()
    assert line.startswith("DATABASE_URL ")
    assert "secret" not in line
    with pytest.raises(ConfigError) as from_settings:
        load_settings(None, database_url=bad)
    [line] = str(from_settings.value).splitlines()
    assert line.startswith("invalid setting DATABASE_URL: ")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///wa-gateway.db", "sqlite+aiosqlite:///wa-gateway.db"),
        ("sqlite:////var/lib/wa/ledger.db", "sqlite+aiosqlite:////var/lib/wa/ledger.db"),
        ("postgresql://u:p@db:5432/wa", "postgresql+asyncpg://u:p@db:5432/wa"),
        ("postgres://u:p@db/wa", "postgresql+asyncpg://u:p@db/wa"),
        ("postgresql+asyncpg://u@db/wa", "postgresql+asyncpg://u@db/wa"),
    ],
)
def test_database_urls_become_async_driver_urls(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


def test_the_default_database_is_a_sqlite_file_in_the_working_directory() -> None:
    settings = load_settings(None)
    assert settings.database_url == "sqlite:///wa-gateway.db"
    assert settings.wa_ledger_retention_days == 90


def test_db_upgrade_and_prune_on_the_command_line(tmp_path: Path) -> None:
    def wa_gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "db", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )

    first = wa_gateway("upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"ledger at sqlite:///wa-gateway.db: schema upgraded from empty to revision {head()}"
    )
    assert (tmp_path / "wa-gateway.db").is_file()
    pruned = wa_gateway("prune", "--days", "7")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 0 notification(s) and 0 event(s) created before ")


def test_a_database_that_cannot_be_opened_is_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wa_gateway.cli", "--env-file", "", "db", "upgrade"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.db"},
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("wa-gateway: error: the ledger database at sqlite:///")
    assert "check DATABASE_URL" in line


async def _add(engine: AsyncEngine, id_: str, created_at: datetime, *, events: int = 0) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(
            NotificationRecord(
                id=id_, channel="default", provider="log", to="logistic", target_kind="group",
                target_address="120363195657916590@g.us", event=None, status="queued",
                attempts=0, created_at=created_at, updated_at=created_at,
            )
        )
        await session.flush()
        for attempt in range(events):
            session.add(
                NotificationEvent(
                    notification_id=id_, at=created_at, status="queued", attempt=attempt,
                    key=f"{id_}:queued:{attempt}:",
                )
            )


async def _ids(engine: AsyncEngine) -> set[str]:
    async with async_sessionmaker(engine)() as session:
        return set((await session.scalars(select(NotificationRecord.id))).all())


async def test_sqlite_from_the_previous_revision_is_migrated_with_its_rows(url: str, engine: AsyncEngine) -> None:
    from sqlalchemy import text

    from wa_gateway.ledger.queries import get_notification

    await upgrade(engine, url, "0001")
    async with engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO notifications (id, channel, provider, \"to\", target_kind, target_address, status, "
            "attempts, created_at, updated_at) VALUES ('n-1', 'default', 'log', 'logistic', 'group', "
            "'120363195657916590@g.us', 'sent', 1, '2026-11-28 08:00:00', '2026-11-28 08:00:01')"))
        await connection.execute(text(
            "INSERT INTO notification_events (notification_id, at, status) "
            "VALUES ('n-1', '2026-11-28 08:00:00', 'queued'), ('n-1', '2026-11-28 08:00:01', 'sent')"))

    async with open_ledger(url) as opened:  # a process migrates SQLite itself
        assert await current_revision(opened) == head()
        found = await get_notification(opened, "n-1")
    assert found is not None and [e["status"] for e in found["events"]] == ["queued", "sent"]


def test_the_revisions_read_as_text_agree_with_alembic() -> None:
    from wa_gateway.ledger.schema import known_revisions, script_directory

    alembic = script_directory()
    assert head() == alembic.get_current_head()
    assert known_revisions() == {script.revision for script in alembic.walk_revisions()}


def test_a_process_whose_schema_is_current_never_imports_alembic(url: str) -> None:
    """Alembic is about 11 MiB: loaded to migrate, not to check."""
    script = (
        "import asyncio, sys\n"
        "from wa_gateway.ledger.schema import open_ledger\n"
        "async def main(url):\n"
        "    async with open_ledger(url): pass\n"
        f"asyncio.run(main({url!r}))\n"
        "before = 'alembic' in sys.modules\n"
        f"asyncio.run(main({url!r}))\n"
        "print(before)\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "True"  # the first open migrated the new file: alembic ran
    script_second = (
        "import asyncio, sys\n"
        "from wa_gateway.ledger.schema import open_ledger\n"
        "async def main(url):\n"
        "    async with open_ledger(url): pass\n"
        f"asyncio.run(main({url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    second = subprocess.run([sys.executable, "-c", script_second], capture_output=True, text=True, check=True)
    assert second.stdout.strip() == "False"
