"""Delete the notifications older than WA_LEDGER_RETENTION_DAYS, with their events.

In batches, each its own short transaction, so a prune of a large table never holds
the writers up for long; events are deleted explicitly (SQLite enforces the foreign
key's ON DELETE CASCADE only when PRAGMA foreign_keys is on in that connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .models import NotificationEvent, NotificationRecord, utcnow

BATCH = 1000
"""Notifications deleted per transaction (SQLite allows 32766 bound values per statement)."""


@dataclass(frozen=True)
class Pruned:
    notifications: int
    events: int
    before: datetime
    """Notifications created before this instant were deleted."""


async def prune(
    engine: AsyncEngine, days: int, *, now: datetime | None = None, batch: int = BATCH
) -> Pruned:
    """Delete every notification created more than `days` days before `now`, and its events."""
    if days < 1:
        raise ValueError("keep at least one day")
    before = (now or utcnow()) - timedelta(days=days)
    deleted_notifications = deleted_events = 0
    old = select(NotificationRecord.id).where(NotificationRecord.created_at < before).limit(batch)
    while True:
        async with engine.begin() as connection:
            ids = list((await connection.execute(old)).scalars())
            if not ids:
                break
            events = await connection.execute(
                delete(NotificationEvent).where(NotificationEvent.notification_id.in_(ids))
            )
            notifications = await connection.execute(
                delete(NotificationRecord).where(NotificationRecord.id.in_(ids))
            )
            deleted_events += events.rowcount
            deleted_notifications += notifications.rowcount
    return Pruned(notifications=deleted_notifications, events=deleted_events, before=before)
