"""The waitlist (候补): one row per person waiting for a session, and the freed numbers kept for a session's line
until they are offered. ``clinic_slots.taken`` counts live bookings + offered entries + held numbers
(domain/booking/waitlist_service.py). A partial unique index keeps one live entry per person and session."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

_LIVE = "state IN ('waiting', 'offered')"

waitlist_entries = sa.Table(
    "waitlist_entries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("person_id", Id, nullable=False),
    sa.Column("patient_id", Id, nullable=False),
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
    sa.Column("booking_id", Id, nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("end_reason", sa.String(32), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_waitlist_entries_line", "hospital_code", "session_id", "state", "created_at"),
    sa.Index("ix_waitlist_entries_account", "account_id", "created_at"),
    sa.Index("ix_waitlist_entries_person", "person_id", "state"),
    sa.Index("ix_waitlist_entries_state_expiry", "state", "offer_expires_at"),
    sa.Index("ix_waitlist_entries_notice", "notice_id"),
    sa.Index(
        "ux_waitlist_entries_live_person_session",
        "person_id",
        "hospital_code",
        "session_id",
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    ),
)

waitlist_numbers = sa.Table(
    "waitlist_numbers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("hospital_code", sa.String(32), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("slot_id", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Index("ix_waitlist_numbers_created", "created_at"),
    sa.Index("ix_waitlist_numbers_slot", "hospital_code", "slot_id"),
)
"""A row holds one number of its slot (counted in ``clinic_slots.taken``) until ``booking.waitlist_offer`` offers
it (the row goes, an entry holds the number) or gives it back (the row goes, ``taken`` drops)."""
