"""Accounts: residents and their login identities, staff, sessions, refresh grants, SMS codes.

Revision ID: 0003_accounts
Revises: 0002_audit
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import JSONType, UTCDateTime

revision: str = "0003_accounts"
down_revision: str | None = "0002_audit"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resident_accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_active_at", UTCDateTime(), nullable=False),
        sa.Column("phone_index", sa.String(128), nullable=True),
        sa.Column("phone_cipher", sa.Text(), nullable=True),
        sa.Column("phone_bound_at", UTCDateTime(), nullable=True),
        sa.Column("merged_into", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_resident_accounts"),
        sa.UniqueConstraint("phone_index", name="uq_resident_accounts_phone_index"),
    )
    grant_app("resident_accounts")

    op.create_table(
        "account_identities",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("union_id", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "app_id", "subject", name="pk_account_identities"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["resident_accounts.id"], name="fk_account_identities_account_id_resident_accounts"
        ),
    )
    op.create_index("ix_account_identities_account_id", "account_identities", ["account_id"])
    grant_app("account_identities")

    op.create_table(
        "staff_accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("login_name", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(50), nullable=False),
        sa.Column("roles", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("password_changed_at", UTCDateTime(), nullable=True),
        sa.Column("password_history", JSONType, nullable=False),
        sa.Column("totp_cipher", sa.Text(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("activation_hash", sa.String(128), nullable=True),
        sa.Column("activation_expires_at", UTCDateTime(), nullable=True),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_staff_accounts"),
        sa.UniqueConstraint("login_name", name="uq_staff_accounts_login_name"),
    )
    grant_app("staff_accounts", "SELECT, INSERT, UPDATE")

    op.create_table(
        "staff_links",
        sa.Column("staff_id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("practitioner_id", sa.String(64), nullable=False),
        sa.Column("roles", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("staff_id", "hospital_code", "practitioner_id", name="pk_staff_links"),
        sa.ForeignKeyConstraint(["staff_id"], ["staff_accounts.id"], name="fk_staff_links_staff_id_staff_accounts"),
    )
    grant_app("staff_links")

    op.create_table(
        "staff_login_failures",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("staff_id", ID, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff_login_failures"),
    )
    op.create_index("ix_staff_login_failures_staff_id_at", "staff_login_failures", ["staff_id", "at"])
    grant_app("staff_login_failures", sequence="staff_login_failures_id_seq")

    op.create_table(
        "sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("audience", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("idle_seconds", sa.Integer(), nullable=False),
        sa.Column("roles", JSONType, nullable=False),
        sa.Column("restriction", sa.String(32), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.String(40), nullable=True),
        sa.Column("device", sa.String(200), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_account_id", "sessions", ["account_id"])
    grant_app("sessions")

    op.create_table(
        "refresh_grants",
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_grants"),
    )
    op.create_index("ix_refresh_grants_session_id", "refresh_grants", ["session_id"])
    grant_app("refresh_grants")

    op.create_table(
        "sms_codes",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("phone_index", sa.String(128), nullable=False),
        sa.Column("code_hash", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("consumed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sms_codes"),
    )
    op.create_index("ix_sms_codes_phone_index_id", "sms_codes", ["phone_index", "id"])
    grant_app("sms_codes", sequence="sms_codes_id_seq")


def downgrade() -> None:
    for table in (
        "sms_codes",
        "refresh_grants",
        "sessions",
        "staff_login_failures",
        "staff_links",
        "staff_accounts",
        "account_identities",
        "resident_accounts",
    ):
        op.drop_table(table)
