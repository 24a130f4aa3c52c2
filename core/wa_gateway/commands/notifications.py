"""`wa-gateway notifications`: the ledger's notifications, newest first, filtered and
paged; and what `wa-gateway status ID` shows: one notification with its timeline.

Both read the ledger only (DATABASE_URL), never RabbitMQ. Raw phone numbers (in `to`
and in error messages) are masked as the logs mask them, in the table and in `--json`
alike. A database that cannot be reached, or whose schema is older than this release's,
is one line and exit 2; so is a SQLite file that does not exist (a reading command does
not create an empty ledger in the wrong directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..hookspecs import hookimpl
from ..ledger.models import STATUSES
from ..ledger.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    BadQuery,
    Filters,
    Page,
    decode_cursor,
    get_notification,
    json_default,
    list_notifications,
)
from ..logs import mask_phone_numbers
from ..settings import Settings

_DURATION = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --- the command line -------------------------------------------------------------


def point_in_time(text: str, *, now: datetime | None = None) -> datetime:
    """--since/--until: a duration back from now (`90s`, `30m`, `1h`, `2d`, `1h30m`) or an
    ISO time (`2025-06-03T09:00:00+07:00`; one without a zone is UTC). Aware, in UTC."""
    value = text.strip().lower()
    try:
        if _DURATION.fullmatch(value):
            seconds = sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(value))
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # past year 1, or more digits than int() reads
        raise argparse.ArgumentTypeError(f"{text!r} is further back than a date can go") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration back from now (90s, 30m, 1h, 2d) "
            "nor an ISO time (2025-06-03T09:00:00+07:00; without a zone it is UTC)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return value


def cursor(text: str) -> str:
    """--cursor: as a previous page printed it."""
    try:
        decode_cursor(text)
    except BadQuery as exc:
        raise argparse.ArgumentTypeError(f"{exc} (copy it from the last line of the previous page)") from None
    return text


@hookimpl
def register_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "notifications", help="the ledger's notifications, newest first (filter, page, --json)",
        description="The ledger's notifications (DATABASE_URL), newest first. Times are UTC. "
        "--since/--until take a duration back from now (90s, 30m, 1h, 2d) or an ISO time.",
    )
    parser.set_defaults(handler=handle)
    parser.add_argument("--status", choices=STATUSES, help="only this status")
    parser.add_argument("--since", type=point_in_time, metavar="WHEN",
                        help="created at or after: 1h, 2d, or an ISO time")
    parser.add_argument("--until", type=point_in_time, metavar="WHEN",
                        help="created before: 30m, or an ISO time")
    parser.add_argument("--to", metavar="TARGET", help="sent to this target, as the caller gave it (an alias)")
    parser.add_argument("--channel", help="only this channel")
    parser.add_argument("--limit", type=page_size, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})")
    parser.add_argument("--cursor", type=cursor, help="the next page, as the previous page's last line says")
    parser.add_argument("--json", action="store_true",
                        help='one JSON object: {"notifications": [...], "next_cursor": ...}')


def handle(settings: Settings, args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise UserError(f"--since ({_iso(args.since)}) is not before --until ({_iso(args.until)})")
    filters = Filters(
        status=args.status, to=args.to, channel=args.channel, since=args.since,
        until=args.until, limit=args.limit, cursor=args.cursor,
    )
    page = asyncio.run(read_page(settings.database_url, filters))
    notifications = [masked(n) for n in page.notifications]
    if args.json:
        print(dumps({"notifications": notifications, "next_cursor": page.next_cursor}))
    elif not notifications:
        print("no notifications match" + (" (after the cursor)" if args.cursor else ""))
    else:
        print(table(notifications))
        if page.next_cursor is not None:
            print(f"\nmore: {next_page_command(args, page.next_cursor)}")
    return 0


def show_notification(settings: Settings, notification_id: str, *, as_json: bool = False) -> int:
    """`wa-gateway status ID`: the notification and its timeline; 1 when there is none."""
    found = asyncio.run(read_one(settings.database_url, notification_id))
    if found is None:
        from ..ledger.urls import safe_database_url

        print(f"no notification with id {notification_id!r} in the ledger at "
              f"{safe_database_url(settings.database_url)}", file=sys.stderr)
        return 1
    notification = masked(found)
    print(dumps(notification) if as_json else render_notification(notification))
    return 0


def next_page_command(args: argparse.Namespace, next_cursor: str) -> str:
    """The same command with the cursor: the filters as given, a relative --since or
    --until as the absolute time it meant, so the next page has the same bounds."""
    words = ["wa-gateway"]
    if getattr(args, "env_file", ".env") != ".env":
        words += ["--env-file", args.env_file]
    words.append("notifications")
    for flag in ("status", "to", "channel"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", getattr(args, flag)]
    for flag in ("since", "until"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", _iso(getattr(args, flag))]
    if args.limit != DEFAULT_LIMIT:
        words += ["--limit", str(args.limit)]
    return shlex.join([*words, "--cursor", next_cursor])


# --- reading the ledger -----------------------------------------------------------


async def read_page(database_url: str, filters: Filters) -> Page:
    from ..ledger.engine import DATABASE_ERRORS, unavailable  # asyncpg, alembic: when used
    from ..ledger.schema import open_ledger

    _refuse_missing_sqlite(database_url)
    async with open_ledger(database_url) as engine:
        try:
            return await list_notifications(engine, filters)
        except BadQuery as exc:
            raise UserError(str(exc)) from None
        except DATABASE_ERRORS as exc:
            raise unavailable(database_url, exc) from None


async def read_one(database_url: str, notification_id: str) -> dict[str, Any] | None:
    from ..ledger.engine import DATABASE_ERRORS, unavailable
    from ..ledger.schema import open_ledger

    _refuse_missing_sqlite(database_url)
    async with open_ledger(database_url) as engine:
        try:
            return await get_notification(engine, notification_id)
        except DATABASE_ERRORS as exc:
            raise unavailable(database_url, exc) from None


def _refuse_missing_sqlite(database_url: str) -> None:
    from ..ledger.urls import is_sqlite, safe_database_url, sqlite_path

    if is_sqlite(database_url) and not Path(sqlite_path(database_url)).exists():
        raise UserError(
            f"the ledger database at {safe_database_url(database_url)} does not exist "
            f"(no file {sqlite_path(database_url)} here); check DATABASE_URL and the working directory"
        )


# --- showing it -------------------------------------------------------------------


def masked(notification: dict[str, Any]) -> dict[str, Any]:
    """A copy with the raw phone numbers masked: in `to`, the error and the events' messages."""
    copy = dict(notification)
    copy["to"] = mask_phone_numbers(copy["to"])
    if copy.get("error"):
        copy["error"] = {**copy["error"], "message": _mask(copy["error"].get("message"))}
    if "events" in copy:
        copy["events"] = [{**event, "message": _mask(event.get("message"))} for event in copy["events"]]
    return copy


def _mask(text: str | None) -> str | None:
    return None if text is None else mask_phone_numbers(text)


def table(notifications: list[dict[str, Any]]) -> str:
    """One line each: created (UTC, to the second), id, status, channel, to, attempts, error code."""
    rows = [("created (UTC)", "id", "status", "channel", "to", "attempts", "error")]
    rows += [
        (
            _time(n["created_at"]), n["id"], n["status"], _cell(n["channel"]), _cell(n["to"]),
            str(n["attempts"]), _cell((n["error"] or {}).get("code")),
        )
        for n in notifications
    ]
    return _columns(rows, right={5})


def render_notification(n: dict[str, Any]) -> str:
    """The summary fields, then the timeline, oldest first."""
    error = n["error"] or {}
    fields = [
        ("status", n["status"]),
        ("to", n["to"]),
        ("channel", n["channel"]),
        ("provider", n["provider"]),
        ("provider message id", n["provider_message_id"]),
        ("event", n["event"]),
        ("attempts", str(n["attempts"])),
        ("created", f"{_time(n['created_at'])} UTC"),
        ("updated", f"{_time(n['updated_at'])} UTC"),
    ]
    if error:
        fields.append(("error", ": ".join(_cell(part) for part in (error.get("code"), error.get("message"))
                                          if part is not None)))
    width = max(len(label) for label, _ in fields) + 1
    lines = [f"notification {n['id']}"]
    lines += [f"  {label + ':':<{width}} {_cell(value)}" for label, value in fields]
    events = n.get("events") or []
    lines += ["", f"timeline ({len(events)} event{'' if len(events) == 1 else 's'}, oldest first)"]
    rows = [("at (UTC)", "status", "channel/provider", "attempt", "code", "message")]
    rows += [
        (
            _time(e["at"]), e["status"], _via(e["channel"], e["provider"]),
            _cell(e["attempt"]), _cell(e["code"]), _cell(e["message"]),
        )
        for e in events
    ]
    lines += ["  " + line for line in _columns(rows, right={3}).splitlines()]
    return "\n".join(lines)


def _columns(rows: Sequence[Sequence[str]], *, right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def _via(channel: str | None, provider: str | None) -> str:
    if channel is None and provider is None:
        return "-"
    return f"{channel or '-'}/{provider or '-'}"


def _cell(value: Any) -> str:
    """A value on one line: '-' for none; line breaks and control characters (a provider's
    message can hold any) become spaces, everything else (emoji too) stays."""
    if value is None or value == "":
        return "-"
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(value))


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """JSON as GET /notifications and GET /notify/{id} answer it: ISO times in UTC
    (`…+00:00`), the text as it is (no \\u escapes); indented, for reading."""
    return json.dumps(value, default=json_default, ensure_ascii=False, indent=2)
