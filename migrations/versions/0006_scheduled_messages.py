"""Scheduled messages (reminders): a due time, a state, the subject they are about.

Revision ID: 0006_scheduled_messages
Revises: 0005_notifications
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0006_scheduled_messages"
down_revision: str | None = "0005_notifications"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("values_cipher", sa.Text(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scheduled_messages"),
        sa.UniqueConstraint("key", name="uq_scheduled_messages_key"),
    )
    op.create_index("ix_scheduled_messages_due", "scheduled_messages", ["state", "due_at"])
    op.create_index("ix_scheduled_messages_subject", "scheduled_messages", ["subject_type", "subject_id"])
    grant_app("scheduled_messages", sequence="scheduled_messages_id_seq")


def downgrade() -> None:
    op.drop_table("scheduled_messages")
