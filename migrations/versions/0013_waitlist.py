"""The waitlist (候补): entries in line per session (one live entry per person and session) and the freed numbers
held for a session's line until they are offered. ``clinic_slots.taken`` = live bookings + offered entries + held
numbers.

Revision ID: 0013_waitlist
Revises: 0012_booking_ban_lifts
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0013_waitlist"
down_revision: str | None = "0012_booking_ban_lifts"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
_LIVE = "state IN ('waiting', 'offered')"


def upgrade() -> None:
    op.create_table(
        "waitlist_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("department_code", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("visit_day", sa.Date(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("slot_id", sa.String(64), nullable=True),
        sa.Column("slot_start", UTCDateTime(), nullable=True),
        sa.Column("offered_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("offer_expires_at", UTCDateTime(), nullable=True),
        sa.Column("notice_id", sa.String(64), nullable=True),
        sa.Column("booking_id", ID, nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_waitlist_entries"),
    )
    op.create_index(
        "ix_waitlist_entries_line", "waitlist_entries", ["hospital_code", "session_id", "state", "created_at"]
    )
    op.create_index("ix_waitlist_entries_account", "waitlist_entries", ["account_id", "created_at"])
    op.create_index("ix_waitlist_entries_person", "waitlist_entries", ["person_id", "state"])
    op.create_index("ix_waitlist_entries_state_expiry", "waitlist_entries", ["state", "offer_expires_at"])
    op.create_index("ix_waitlist_entries_notice", "waitlist_entries", ["notice_id"])
    op.create_index(
        "ux_waitlist_entries_live_person_session",
        "waitlist_entries",
        ["person_id", "hospital_code", "session_id"],
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    )
    grant_app("waitlist_entries", "SELECT, INSERT, UPDATE")

    op.create_table(
        "waitlist_numbers",
        sa.Column("id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("slot_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_waitlist_numbers"),
    )
    op.create_index("ix_waitlist_numbers_created", "waitlist_numbers", ["created_at"])
    op.create_index("ix_waitlist_numbers_slot", "waitlist_numbers", ["hospital_code", "slot_id"])
    grant_app("waitlist_numbers", "SELECT, INSERT, UPDATE, DELETE")  # UPDATE: its rows are locked FOR UPDATE


def downgrade() -> None:
    op.drop_table("waitlist_numbers")
    op.drop_table("waitlist_entries")
