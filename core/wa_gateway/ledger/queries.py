"""Reading the ledger: one notification with its timeline, and the filtered, paged list.

Both answer plain dicts in the shape of the HTTP API (DESIGN.md "The ledger"), so the
gateway, the commands and the console show the same thing. Times are aware UTC
datetimes; the caller serialises them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .models import STATUSES, NotificationEvent, NotificationRecord

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def json_default(value: Any) -> Any:
    """`json.dumps(default=…)` for what this module answers: its times as ISO 8601, in
    UTC (the ledger's are UTC already). One definition for the HTTP API, the callbacks
    and the commands, so all three write a time the same way."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo is not None else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


class BadQuery(ValueError):
    """A filter or cursor that cannot be used; the message names it."""


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    to: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise BadQuery(f"status must be one of {', '.join(STATUSES)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise BadQuery(f"{name} needs a time zone (an ISO time ending in Z or +07:00)")
            if value is not None and not _in_utc_range(value):
                raise BadQuery(f"{name} is out of range")


@dataclass(frozen=True)
class Page:
    notifications: list[dict[str, Any]]
    next_cursor: str | None


def summary(row: NotificationRecord) -> dict[str, Any]:
    """A notification without its events: GET /notify/{id}'s object, and a list item."""
    error = None
    if row.error_code is not None or row.error_message is not None:
        error = {"code": row.error_code, "message": row.error_message}
    return {
        "id": row.id,
        "status": row.status,
        "to": row.to,
        "channel": row.channel,
        "provider": row.provider or None,
        "provider_message_id": row.provider_message_id,
        "attempts": row.attempts,
        "event": row.event,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "error": error,
    }


def event_entry(event: NotificationEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "status": event.status,
        "channel": event.channel,
        "provider": event.provider,
        "code": event.code,
        "message": event.message,
        "attempt": event.attempt,
    }


async def get_notification(engine: AsyncEngine, notification_id: str) -> dict[str, Any] | None:
    """The notification with its timeline (oldest first), or None."""
    async with engine.connect() as connection:
        row = (await connection.execute(
            select(NotificationRecord).where(NotificationRecord.id == notification_id)
        )).one_or_none()
        if row is None:
            return None
        events = (await connection.execute(
            select(NotificationEvent)
            .where(NotificationEvent.notification_id == notification_id)
            .order_by(NotificationEvent.at, NotificationEvent.id)
        )).all()
    answer = summary(NotificationRecord(**row._mapping))
    answer["events"] = [event_entry(NotificationEvent(**event._mapping)) for event in events]
    return answer


async def summaries_on(connection: AsyncConnection, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The notifications as `summary` shows them, read on `connection` (inside its transaction)."""
    if not ids:
        return {}
    rows = (await connection.execute(
        select(NotificationRecord).where(NotificationRecord.id.in_(sorted(ids)))
    )).all()
    return {row.id: summary(NotificationRecord(**row._mapping)) for row in rows}


async def list_notifications(engine: AsyncEngine, filters: Filters) -> Page:
    """Newest first; `next_cursor` continues after the last one (None: no more)."""
    query: Select[Any] = select(NotificationRecord)
    if filters.status is not None:
        query = query.where(NotificationRecord.status == filters.status)
    if filters.to is not None:
        query = query.where(NotificationRecord.to == filters.to)
    if filters.channel is not None:
        query = query.where(NotificationRecord.channel == filters.channel)
    if filters.since is not None:
        query = query.where(NotificationRecord.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(NotificationRecord.created_at < filters.until)
    if filters.cursor is not None:
        at, last_id = decode_cursor(filters.cursor)
        query = query.where(or_(
            NotificationRecord.created_at < at,
            and_(NotificationRecord.created_at == at, NotificationRecord.id < last_id),
        ))
    query = query.order_by(NotificationRecord.created_at.desc(), NotificationRecord.id.desc())
    async with engine.connect() as connection:
        rows = (await connection.execute(query.limit(filters.limit + 1))).all()
    records = [NotificationRecord(**row._mapping) for row in rows[: filters.limit]]
    next_cursor = None
    if len(rows) > filters.limit:
        last = records[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return Page([summary(record) for record in records], next_cursor)


def encode_cursor(at: datetime, notification_id: str) -> str:
    raw = json.dumps([at.astimezone(UTC).isoformat(), notification_id]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, notification_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(notification_id, str) or not _in_utc_range(when):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise BadQuery("cursor is not one this gateway gave out") from None
    return when, notification_id


def _in_utc_range(when: datetime) -> bool:
    """Whether an aware time is one UTC can hold (the ledger stores UTC): year 1 at
    +05:00 or year 9999 at -05:00 is not, and would fail in the database driver."""
    try:
        when.astimezone(UTC)
    except OverflowError:
        return False
    return True
