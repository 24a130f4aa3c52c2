"""The database's schema revision against this package's migrations.

- `open_ledger`: what a process uses: its one engine, with the schema checked, disposed
  of at the end (in the same cleanup context as the AMQP connection).
- `upgrade`: apply the migrations (`wa-gateway db upgrade`); on PostgreSQL under an
  advisory lock, so two upgrades at once take turns.
- `ensure_schema`: what every process does when it opens the ledger. SQLite (embedded,
  nobody else shares it) is created and migrated there and then, one process at a time
  (a lock on the file); on PostgreSQL a missing or older schema stops the process with
  one line saying to run `wa-gateway db upgrade`. A schema newer than the package
  (a downgrade of wa-gateway) stops it on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import UserError
from .engine import DATABASE_ERRORS, create_engine, unavailable
from .urls import is_sqlite, safe_database_url, sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Alembic says "Context impl SQLiteImpl." at INFO on every check: `db upgrade` prints
# what it did itself, and a process's log keeps to what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)
_PG_UPGRADE_LOCK = 0x7761_6C65_6467  # pg_advisory_xact_lock key: "waledg"


class SchemaMismatch(UserError):
    """The database's schema is not the one this package needs; the message says what to do."""


@dataclass(frozen=True)
class Upgraded:
    before: str | None
    """The revision the database was at; None: it had no schema."""
    after: str


def alembic_config() -> Config:
    """Alembic's configuration for the package's migrations (no ini file needed).

    Alembic is imported here, when a migration runs, not when a process starts: a process
    whose schema is current never loads it (about 11 MiB)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return config


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


_REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision(?:: [^=]+)? = (?:"([^"]+)"|None)', re.MULTILINE)


@cache
def _revisions() -> dict[str, str | None]:
    """Each migration's revision and the one it follows, read from the files as text (a
    unit test checks this agrees with Alembic's own reading)."""
    found: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        source = path.read_text("utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is not None and down is not None:
            found[revision.group(1)] = down.group(1)
    return found


def head() -> str:
    """The newest revision this package knows: the one no other follows."""
    revisions = _revisions()
    heads = set(revisions) - {down for down in revisions.values() if down is not None}
    assert len(heads) == 1, f"the migrations must have one head, not {sorted(heads)}"
    return heads.pop()


def known_revisions() -> set[str]:
    return set(_revisions())


def _current(connection: Connection) -> str | None:
    """The revision in `alembic_version`, read with plain SQL (no Alembic at start)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    return versions[0] if len(versions) == 1 else None


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None when it has no schema (an empty database)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade(engine: AsyncEngine, database_url: str, revision: str = "head") -> Upgraded:
    """Apply the migrations up to `revision`; a database that cannot be reached is a
    LedgerUnavailable, one that is newer than the package a SchemaMismatch."""
    try:
        async with _sqlite_lock(database_url), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_UPGRADE_LOCK})"))
            before = await connection.run_sync(_current)
            _refuse_unknown(before, database_url)
            await connection.run_sync(_upgrade, revision)
            after = await connection.run_sync(_current)
    except DATABASE_ERRORS as exc:
        raise unavailable(database_url, exc) from None
    return Upgraded(before=before, after=after or "")


async def ensure_schema(engine: AsyncEngine, database_url: str) -> None:
    """Make sure the schema is this package's head: migrate SQLite, or stop with one line."""
    if is_sqlite(database_url):
        try:
            current = await current_revision(engine)
        except DATABASE_ERRORS as exc:
            raise unavailable(database_url, exc) from None
        if current != head():
            await upgrade(engine, database_url)
        return
    try:
        current = await current_revision(engine)
    except DATABASE_ERRORS as exc:
        raise unavailable(database_url, exc) from None
    where = f"the ledger database at {safe_database_url(database_url)}"
    if current is None:
        raise SchemaMismatch(f"{where} has no schema: run `wa-gateway db upgrade`")
    _refuse_unknown(current, database_url)
    if current != head():
        raise SchemaMismatch(
            f"{where} is at schema revision {current}, this wa-gateway needs {head()}: "
            "run `wa-gateway db upgrade`"
        )


@contextlib.asynccontextmanager
async def open_ledger(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The process's engine, with the schema checked (SQLite: created and migrated;
    PostgreSQL: stops with one line unless `wa-gateway db upgrade` ran); disposed of at
    the end."""
    engine = create_engine(database_url)
    try:
        await ensure_schema(engine, database_url)
        yield engine
    finally:
        await engine.dispose()


def _refuse_unknown(current: str | None, database_url: str) -> None:
    if current is not None and current not in known_revisions():
        raise SchemaMismatch(
            f"the ledger database at {safe_database_url(database_url)} is at schema revision "
            f"{current}, which this wa-gateway does not know (its newest is {head()}): "
            "install the wa-gateway that migrated it, or point DATABASE_URL elsewhere"
        )


@contextlib.asynccontextmanager
async def _sqlite_lock(database_url: str) -> AsyncIterator[None]:
    """One process at a time migrates a SQLite file: an flock on the file itself
    (SQLite's own locks are fcntl locks, which flock does not touch)."""
    if not is_sqlite(database_url):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process per file is the rule there
        yield
        return
    path = sqlite_path(database_url)
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
