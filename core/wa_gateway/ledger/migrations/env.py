"""Alembic's environment for the ledger.

`wa-gateway db upgrade` (schema.upgrade) runs the migrations on a connection it opened
and passes it in `config.attributes["connection"]`. A developer making a new revision
runs Alembic itself, with the database from DATABASE_URL (default sqlite:///wa-gateway.db):

    DATABASE_URL=sqlite:///dev.db .venv/bin/wa-gateway db upgrade
    DATABASE_URL=sqlite:///dev.db .venv/bin/alembic -c core/wa_gateway/ledger/alembic.ini \
        revision --autogenerate -m "what changes"

then reads the new file in versions/ (autogenerate misses some changes) and tests the
upgrade from the previous revision (tests/integration/test_ledger_postgres.py).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import Base
from wa_gateway.ledger.urls import DEFAULT_DATABASE_URL

config = context.config
target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying a table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine() -> None:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the ledger's migrations run online only: wa-gateway db upgrade")

given = config.attributes.get("connection")
if given is not None:
    run_on(given)
else:
    asyncio.run(run_with_own_engine())
