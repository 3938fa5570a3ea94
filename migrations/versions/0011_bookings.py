"""Bookings: one row per booking with its deadlines and state; one live booking per person, hospital,
department and visit day.

Revision ID: 0011_bookings
Revises: 0010_reconciliation
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0011_bookings"
down_revision: str | None = "0010_reconciliation"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
_LIVE = "state IN ('held', 'paid', 'confirmed', 'checked_in')"


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("department_code", sa.String(64), nullable=False),
        sa.Column("doctor_code", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("slot_id", sa.String(64), nullable=False),
        sa.Column("slot_start", UTCDateTime(), nullable=False),
        sa.Column("slot_end", UTCDateTime(), nullable=False),
        sa.Column("visit_day", sa.Date(), nullable=False),
        sa.Column("fee_fen", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("hold_expires_at", UTCDateTime(), nullable=True),
        sa.Column("cancel_deadline", UTCDateTime(), nullable=False),
        sa.Column("checkin_opens_at", UTCDateTime(), nullable=False),
        sa.Column("checkin_closes_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payment_order_id", ID, nullable=True),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        sa.Column("refund_reason", sa.String(32), nullable=True),
        sa.Column("his_lock_id", sa.String(64), nullable=True),
        sa.Column("his_registration_id", sa.String(64), nullable=True),
        sa.Column("queue_number", sa.Integer(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("reschedules", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("fee_fen >= 0", name="ck_bookings_fee_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_bookings"),
        sa.UniqueConstraint("payment_order_id", name="uq_bookings_payment_order_id"),
    )
    op.create_index("ix_bookings_person", "bookings", ["person_id", "slot_start"])
    op.create_index("ix_bookings_account", "bookings", ["account_id", "created_at"])
    op.create_index("ix_bookings_slot", "bookings", ["hospital_code", "slot_id"])
    op.create_index("ix_bookings_session", "bookings", ["hospital_code", "session_id"])
    op.create_index("ix_bookings_state_expiry", "bookings", ["state", "hold_expires_at"])
    op.create_index(
        "ux_bookings_live_person_department_day",
        "bookings",
        ["person_id", "hospital_code", "department_code", "visit_day"],
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    )
    grant_app("bookings", "SELECT, INSERT, UPDATE")


def downgrade() -> None:
    op.drop_table("bookings")
