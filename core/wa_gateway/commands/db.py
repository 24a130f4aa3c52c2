"""`wa-gateway db upgrade` and `wa-gateway db prune [--days N]`: the ledger's schema and
its retention (README "The ledger"). A database that cannot be reached, or a
DATABASE_URL it cannot use, is one line and exit 2."""

from __future__ import annotations

import argparse
import asyncio

from ..hookspecs import hookimpl
from ..settings import Settings


def positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError("keep at least one day (--days 1 or more)")
    return days


async def run_upgrade(database_url: str) -> str:
    from ..ledger.engine import create_engine
    from ..ledger.schema import upgrade
    from ..ledger.urls import safe_database_url

    engine = create_engine(database_url)
    try:
        done = await upgrade(engine, database_url)
    finally:
        await engine.dispose()
    where = safe_database_url(database_url)
    if done.before == done.after:
        return f"ledger at {where}: schema already at revision {done.after}"
    return f"ledger at {where}: schema upgraded from {done.before or 'empty'} to revision {done.after}"


async def run_prune(database_url: str, days: int) -> str:
    from ..ledger.engine import DATABASE_ERRORS, unavailable
    from ..ledger.prune import prune
    from ..ledger.schema import open_ledger

    async with open_ledger(database_url) as engine:
        try:
            pruned = await prune(engine, days)
        except DATABASE_ERRORS as exc:
            raise unavailable(database_url, exc) from None
    return (
        f"pruned {pruned.notifications} notification(s) and {pruned.events} event(s) "
        f"created before {pruned.before.isoformat(timespec='seconds')} ({days} days)"
    )


def handle(settings: Settings, args: argparse.Namespace) -> int:
    if args.db_command == "upgrade":
        print(asyncio.run(run_upgrade(settings.database_url)))
    elif args.db_command == "prune":
        days = args.days if args.days is not None else settings.wa_ledger_retention_days
        print(asyncio.run(run_prune(settings.database_url, days)))
    return 0


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="the ledger database: upgrade its schema, prune old rows")
    db.set_defaults(handler=handle)
    sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    sub.add_parser("upgrade", help="create or migrate the schema of DATABASE_URL to this release's")
    prune = sub.add_parser("prune", help="delete notifications older than WA_LEDGER_RETENTION_DAYS")
    prune.add_argument(
        "--days", type=positive_days, default=None,
        help="keep this many days instead (default: WA_LEDGER_RETENTION_DAYS, 90)",
    )
