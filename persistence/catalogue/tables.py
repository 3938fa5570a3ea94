"""The hospital registry and our synced copy of each HIS's catalogue and number-source pool."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import JSONType, UTCDateTime

hospitals = sa.Table(
    "hospitals",
    metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("region_code", sa.String(12), nullable=False, index=True),
    sa.Column("address", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(40), nullable=False),
    sa.Column("adapter", sa.String(16), nullable=False),
    sa.Column("adapter_settings", JSONType, nullable=False),
    sa.Column("pool_share_percent", sa.Integer(), nullable=False),
    sa.Column("rules", JSONType, nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("callback_secret_cipher", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

departments = sa.Table(
    "departments",
    metadata,
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("parent_code", sa.String(64), nullable=True),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
)

doctors = sa.Table(
    "doctors",
    metadata,
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("title", sa.String(20), nullable=False),
    sa.Column("department_codes", JSONType, nullable=False),
    sa.Column("specialties", JSONType, nullable=False),
    sa.Column("search_text", sa.Text(), nullable=False),
    sa.Column("introduction", sa.Text(), nullable=False),
    sa.Column("on_leave", sa.Boolean(), nullable=False),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
)

clinic_sessions = sa.Table(
    "clinic_sessions",
    metadata,
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("department_code", sa.String(64), nullable=False),
    sa.Column("doctor_code", sa.String(64), nullable=True),
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("period", sa.String(12), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("fee_fen", sa.Integer(), nullable=False),
    sa.Column("stop_reason", sa.String(200), nullable=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
    sa.Index("ix_clinic_sessions_doctor", "hospital_code", "doctor_code", "day"),
    sa.Index("ix_clinic_sessions_department", "hospital_code", "department_code", "day"),
)

clinic_slots = sa.Table(
    "clinic_slots",
    metadata,
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("start_at", UTCDateTime(), nullable=False),
    sa.Column("end_at", UTCDateTime(), nullable=False),
    sa.Column("capacity", sa.Integer(), nullable=False),
    sa.Column("taken", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("his_booked", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("synced_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("taken >= 0 AND taken <= capacity", name="taken_within_capacity"),
    sa.Index("ix_clinic_slots_session", "hospital_code", "session_id"),
)

capacity_conflicts = sa.Table(
    "capacity_conflicts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("hospital_code", sa.String(32), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("slot_id", sa.String(64), nullable=False),
    sa.Column("his_capacity", sa.Integer(), nullable=False),
    sa.Column("our_taken", sa.Integer(), nullable=False),
    sa.Column("detected_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolution", sa.String(200), nullable=True),
    sa.Index(
        "uq_capacity_conflicts_open",
        "hospital_code",
        "slot_id",
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    ),
)

catalogue_sync_state = sa.Table(
    "catalogue_sync_state",
    metadata,
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("cursor", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
)
