"""event keys, provider message ids not unique

Each status change carries a key that is the same however often it arrives (a
redelivered message, a provider retrying its webhook): a unique index on it makes the
writer record each change once. The provider's message id loses its unique index:
a provider that reuses ids must never wedge the writer on a constraint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_events") as batch:
        batch.add_column(sa.Column("key", sa.String(512), nullable=True))
    # rows written before keys existed get one of their own
    op.execute("UPDATE notification_events SET key = 'legacy:' || CAST(id AS VARCHAR(20)) WHERE key IS NULL")
    with op.batch_alter_table("notification_events") as batch:
        batch.alter_column("key", existing_type=sa.String(512), nullable=False)
        batch.create_index("uq_notification_events_key", ["key"], unique=True)
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("uq_notifications_provider_message_id")
        batch.create_index(
            "ix_notifications_provider_message_id", ["provider_message_id", "provider"]
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_provider_message_id")
        batch.create_index(
            "uq_notifications_provider_message_id", ["provider", "provider_message_id"], unique=True
        )
    with op.batch_alter_table("notification_events") as batch:
        batch.drop_index("uq_notification_events_key")
        batch.drop_column("key")
