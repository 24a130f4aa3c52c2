"""notifications.callback_url

Where a notification's status changes are POSTed (the request's `callback_url` or
GATEWAY_CALLBACK_URL): the ledger writer, which applies every change, queues a callback
for each one, including the receipts that arrive without the notification's facts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("callback_url", sa.String(2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("callback_url")
