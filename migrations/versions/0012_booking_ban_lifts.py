"""Booking ban lifts: an operator's decision to lift a person's no-show ban (APT-008); the rules ignore the
no-shows at or before ``covers_until``.

Revision ID: 0012_booking_ban_lifts
Revises: 0011_bookings
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0012_booking_ban_lifts"
down_revision: str | None = "0011_bookings"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "booking_ban_lifts",
        sa.Column("id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("covers_until", UTCDateTime(), nullable=False),
        sa.Column("lifted_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_booking_ban_lifts"),
    )
    op.create_index("ix_booking_ban_lifts_person", "booking_ban_lifts", ["person_id", "covers_until"])
    grant_app("booking_ban_lifts", "SELECT, INSERT")


def downgrade() -> None:
    op.drop_table("booking_ban_lifts")
