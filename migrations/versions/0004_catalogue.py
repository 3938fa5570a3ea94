"""Catalogue: hospital registry, synced departments, doctors, clinic sessions and slots, capacity conflicts.

Revision ID: 0004_catalogue
Revises: 0003_accounts
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import JSONType, UTCDateTime

revision: str = "0004_catalogue"
down_revision: str | None = "0003_accounts"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "hospitals",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("region_code", sa.String(12), nullable=False),
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
        sa.PrimaryKeyConstraint("code", name="pk_hospitals"),
    )
    op.create_index("ix_hospitals_region_code", "hospitals", ["region_code"])
    grant_app("hospitals", "SELECT, INSERT, UPDATE")

    op.create_table(
        "departments",
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("parent_code", sa.String(64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_code", "code", name="pk_departments"),
    )
    grant_app("departments")

    op.create_table(
        "doctors",
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("title", sa.String(20), nullable=False),
        sa.Column("department_codes", JSONType, nullable=False),
        sa.Column("specialties", JSONType, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("introduction", sa.Text(), nullable=False),
        sa.Column("on_leave", sa.Boolean(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_code", "code", name="pk_doctors"),
    )
    grant_app("doctors")

    op.create_table(
        "clinic_sessions",
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("department_code", sa.String(64), nullable=False),
        sa.Column("doctor_code", sa.String(64), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("period", sa.String(12), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("fee_fen", sa.Integer(), nullable=False),
        sa.Column("stop_reason", sa.String(200), nullable=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_code", "id", name="pk_clinic_sessions"),
    )
    op.create_index("ix_clinic_sessions_doctor", "clinic_sessions", ["hospital_code", "doctor_code", "day"])
    op.create_index("ix_clinic_sessions_department", "clinic_sessions", ["hospital_code", "department_code", "day"])
    grant_app("clinic_sessions")

    op.create_table(
        "clinic_slots",
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("start_at", UTCDateTime(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("his_booked", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_code", "id", name="pk_clinic_slots"),
        sa.CheckConstraint("taken >= 0 AND taken <= capacity", name="ck_clinic_slots_taken_within_capacity"),
    )
    op.create_index("ix_clinic_slots_session", "clinic_slots", ["hospital_code", "session_id"])
    grant_app("clinic_slots")

    op.create_table(
        "capacity_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("slot_id", sa.String(64), nullable=False),
        sa.Column("his_capacity", sa.Integer(), nullable=False),
        sa.Column("our_taken", sa.Integer(), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolution", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_capacity_conflicts"),
    )
    op.create_index(
        "uq_capacity_conflicts_open",
        "capacity_conflicts",
        ["hospital_code", "slot_id"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    )
    grant_app("capacity_conflicts", "SELECT, INSERT, UPDATE", sequence="capacity_conflicts_id_seq")

    op.create_table(
        "catalogue_sync_state",
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("cursor", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("hospital_code", name="pk_catalogue_sync_state"),
    )
    grant_app("catalogue_sync_state")


def downgrade() -> None:
    for table in (
        "catalogue_sync_state",
        "capacity_conflicts",
        "clinic_slots",
        "clinic_sessions",
        "doctors",
        "departments",
        "hospitals",
    ):
        op.drop_table(table)
