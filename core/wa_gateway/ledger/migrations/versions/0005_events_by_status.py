"""notification_events by status and time

The operator console's overview counts sent / delivered / failed / dead per hour for the
last day, and its channels page looks for each channel's newest failure: both read the
events of a few statuses within a time range, newest first. An index on (status, at)
lets the database read only those index entries, whatever the size of the ledger.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_notification_events_status_at", "notification_events", ["status", "at"])


def downgrade() -> None:
    op.drop_index("ix_notification_events_status_at", table_name="notification_events")
