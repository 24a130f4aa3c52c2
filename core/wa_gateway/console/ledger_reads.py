"""The console's own reads of the ledger, besides queries.py's list and timeline: each
channel's latest failure, and the provider codes of the dead letters on the page."""

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


async def error_codes(engine: AsyncEngine, ids: Iterable[str]) -> dict[str, str]:
    """notification id -> the provider's code of its latest error, for those that have one."""
    wanted = sorted({notification_id for notification_id in ids if len(notification_id) <= 36})
    codes: dict[str, str] = {}
    async with engine.connect() as connection:
        for start in range(0, len(wanted), 500):  # a bounded IN list
            rows = (await connection.execute(
                select(NotificationRecord.id, NotificationRecord.error_code)
                .where(NotificationRecord.id.in_(wanted[start:start + 500]),
                       NotificationRecord.error_code.is_not(None))
            )).all()
            codes.update({row.id: row.error_code for row in rows})
    return codes
