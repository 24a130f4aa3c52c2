"""The one async engine a process opens on the ledger (DATABASE_URL).

A process opens it with schema.open_ledger, which also checks the schema; commands
that migrate it (`db upgrade`) make one with create_engine.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import UserError
from .urls import async_database_url, safe_database_url

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for PostgreSQL to accept a connection."""
SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another process's lock before failing."""


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, no such directory; TimeoutError too
    SQLAlchemyError,
    asyncpg.PostgresError,  # wrong password, no such database: raised while connecting
    asyncpg.InterfaceError,
)
"""What a database that cannot be reached or used raises."""


class LedgerUnavailable(UserError):
    """The database does not answer, refuses the credentials or does not exist."""


def create_engine(database_url: str, **options: Any) -> AsyncEngine:
    """An async engine for DATABASE_URL (a ConfigError of one line for a URL it cannot
    use). One per process: it holds the connection pool."""
    url = async_database_url(database_url)
    if url.startswith("sqlite+"):
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **options
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args={"timeout": CONNECT_TIMEOUT}, **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers do not block the writer, so a gateway and a worker can share the file;
    # foreign keys are off by default in SQLite
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def unavailable(database_url: str, exc: BaseException) -> LedgerUnavailable:
    """The one line for a database that cannot be reached or used."""
    return LedgerUnavailable(
        f"the ledger database at {safe_database_url(database_url)} cannot be used: "
        f"{first_line(exc)}; check DATABASE_URL and that the database is running"
    )


def first_line(exc: BaseException) -> str:
    """The reason in one line, without SQLAlchemy's wrapping and links."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    line = text.splitlines()[0]
    # SQLAlchemy's "(sqlite3.OperationalError) unable to open …": the message is enough
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line[:300]
