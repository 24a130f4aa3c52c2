"""The ledger's tables as SQLAlchemy 2 typed models.

`notifications` holds one row per notification, its latest status; `notification_events`
one row per status change (its timeline). Times are UTC: stored as given on PostgreSQL
(timestamptz), and read back as aware datetimes from SQLite too (UTCDateTime).

Changing a table is a new migration in `migrations/versions/` (see migrations/env.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("queued", "retrying", "sent", "delivered", "read", "failed", "dead")
"""Every status a notification can have (DESIGN.md "The ledger")."""

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp with time zone that goes in as UTC and comes out aware, on SQLite too
    (which keeps no zone: a naive value read from it is UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime ({value}) for the ledger: give it a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


_status_values = ", ".join(f"'{status}'" for status in STATUSES)
# SQLite's INTEGER PRIMARY KEY is its rowid; BIGINT is not: give each database its own
_EventId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class NotificationRecord(Base):
    """A notification and its latest status."""

    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """The notification id the gateway answered (a UUID, as text)."""
    channel: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(255))
    """The target as the caller gave it: an alias, or a raw number / group id."""
    target_kind: Mapped[str] = mapped_column(String(16))
    """group or person."""
    target_address: Mapped[str] = mapped_column(String(255))
    """The resolved address, stored as given (masking is for display)."""
    event: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    """Where its status changes are POSTed; None: nowhere."""
    body: Mapped[str | None] = mapped_column(Text)
    """The queued message, kept only when it has templates: a receipt saying "outside the
    24-hour window" later has the template sent from it."""

    events: Mapped[list[NotificationEvent]] = relationship(
        back_populates="notification", order_by="NotificationEvent.id",
        cascade="all, delete-orphan", passive_deletes=True,
    )

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_values})", name="status"),
        # GET /notifications: newest first, by status, channel or target; paging and
        # prune by time. The id breaks ties between rows of the same instant (cursor).
        Index(None, "status", "created_at"),
        Index(None, "channel", "created_at"),
        Index(None, "to", "created_at"),
        Index(None, "created_at", "id"),
        # a receipt names the provider's message id (not unique: a provider reusing ids
        # must never wedge the writer on a constraint; the newest notification wins)
        Index("ix_notifications_provider_message_id", "provider_message_id", "provider"),
    )


class NotificationEvent(Base):
    """One status change of a notification: its timeline, oldest first."""

    __tablename__ = "notification_events"

    id: Mapped[int] = mapped_column(_EventId, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("notifications.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(64))
    """The provider's code for a failure (Meta 131047, Twilio 63016 …)."""
    message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(512))
    """The same however often the change arrives: recorded once (changes.StatusChange.key)."""

    notification: Mapped[NotificationRecord] = relationship(back_populates="events")

    __table_args__ = (
        CheckConstraint(f"status IN ({_status_values})", name="status"),
        Index(None, "notification_id", "at"),
        # the console: changes of a few statuses within a time range (per-hour counts,
        # a channel's newest failure)
        Index(None, "status", "at"),
        Index("uq_notification_events_key", "key", unique=True),
    )
