"""Bookings. A partial unique index keeps one live booking per person, hospital, department and visit day
(APT-005's first limit, enforced by the database under any race); the slot's taken count lives in
``clinic_slots.taken`` and is changed only by the conditional updates of the repository."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

LIVE_STATES = ("held", "paid", "confirmed", "checked_in")
"""Before or at the visit: the states the per-department-day uniqueness counts."""
_LIVE = "state IN ('held', 'paid', 'confirmed', 'checked_in')"

bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("person_id", Id, nullable=False),
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
    sa.Column("payment_order_id", Id, nullable=True, unique=True),
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
    sa.CheckConstraint("fee_fen >= 0", name="fee_not_negative"),
    sa.Index("ix_bookings_person", "person_id", "slot_start"),
    sa.Index("ix_bookings_account", "account_id", "created_at"),
    sa.Index("ix_bookings_slot", "hospital_code", "slot_id"),
    sa.Index("ix_bookings_session", "hospital_code", "session_id"),
    sa.Index("ix_bookings_state_expiry", "state", "hold_expires_at"),
    sa.Index(
        "ux_bookings_live_person_department_day",
        "person_id",
        "hospital_code",
        "department_code",
        "visit_day",
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    ),
)

booking_ban_lifts = sa.Table(
    "booking_ban_lifts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("person_id", Id, nullable=False),
    sa.Column("covers_until", UTCDateTime(), nullable=False),
    sa.Column("lifted_at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Index("ix_booking_ban_lifts_person", "person_id", "covers_until"),
)
"""An operator's lift of a person's no-show ban (APT-008): the events up to ``covers_until`` stop counting."""
