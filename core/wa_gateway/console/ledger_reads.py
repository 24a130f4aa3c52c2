"""The console's own read of the ledger, besides queries.py's list and timeline: each
channel's latest failure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..ledger.models import NotificationEvent, NotificationRecord

FAILING = ("retrying", "dead", "failed")
"""The statuses whose events carry an error (a receipt's `failed` names no channel: the
notification's does)."""


@dataclass(frozen=True)
class LastError:
    at: datetime
    status: str
    code: str | None
    message: str | None


async def last_errors(engine: AsyncEngine, channels: Iterable[str]) -> dict[str, LastError]:
    """The newest failing event of each channel's notifications. One indexed query per
    channel and status: the index on (status, at) read newest first, stopping at the
    first event of a notification of that channel."""
    found: dict[str, LastError] = {}
    event, record = NotificationEvent, NotificationRecord
    async with engine.connect() as connection:
        for channel in channels:
            for status in FAILING:
                row = (await connection.execute(
                    select(event.at, event.status, event.code, event.message)
                    .join(record, record.id == event.notification_id)
                    .where(event.status == status, record.channel == channel)
                    .order_by(event.at.desc())
                    .limit(1)
                )).one_or_none()
                if row is not None and (channel not in found or row.at > found[channel].at):
                    found[channel] = LastError(row.at, row.status, row.code, row.message)
    return found
