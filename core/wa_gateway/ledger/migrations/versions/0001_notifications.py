"""notifications and notification_events

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CHECK = "status IN ('queued', 'retrying', 'sent', 'delivered', 'read', 'failed', 'dead')"


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("to", sa.String(255), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_address", sa.String(255), nullable=False),
        sa.Column("event", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_notifications_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(op.f("ix_notifications_status_created_at"), "notifications", ["status", "created_at"])
    op.create_index(op.f("ix_notifications_channel_created_at"), "notifications", ["channel", "created_at"])
    op.create_index(op.f("ix_notifications_to_created_at"), "notifications", ["to", "created_at"])
    op.create_index(op.f("ix_notifications_created_at_id"), "notifications", ["created_at", "id"])
    op.create_index(
        "uq_notifications_provider_message_id", "notifications",
        ["provider", "provider_message_id"], unique=True,
    )
    op.create_table(
        "notification_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True, nullable=False,
        ),
        sa.Column("notification_id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_notification_events_status")),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["notifications.id"],
            name=op.f("fk_notification_events_notification_id_notifications"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_events")),
    )
    op.create_index(
        op.f("ix_notification_events_notification_id_at"), "notification_events",
        ["notification_id", "at"],
    )


def downgrade() -> None:
    op.drop_table("notification_events")
    op.drop_table("notifications")
