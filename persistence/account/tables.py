"""Accounts, identities, staff, sessions, refresh grants and SMS codes."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, JSONType, UTCDateTime

resident_accounts = sa.Table(
    "resident_accounts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_active_at", UTCDateTime(), nullable=False),
    sa.Column("phone_index", sa.String(128), nullable=True, unique=True),
    sa.Column("phone_cipher", sa.Text(), nullable=True),
    sa.Column("phone_bound_at", UTCDateTime(), nullable=True),
    sa.Column("merged_into", Id, nullable=True),
)

account_identities = sa.Table(
    "account_identities",
    metadata,
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("app_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(128), primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("resident_accounts.id"), nullable=False, index=True),
    sa.Column("union_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

staff_accounts = sa.Table(
    "staff_accounts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("login_name", sa.String(40), nullable=False, unique=True),
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
)

staff_links = sa.Table(
    "staff_links",
    metadata,
    sa.Column("staff_id", Id, sa.ForeignKey("staff_accounts.id"), primary_key=True),
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("practitioner_id", sa.String(64), primary_key=True),
    sa.Column("roles", JSONType, nullable=False),
)

staff_login_failures = sa.Table(
    "staff_login_failures",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("staff_id", Id, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index("ix_staff_login_failures_staff_id_at", "staff_id", "at"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=False, index=True),
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
)

refresh_grants = sa.Table(
    "refresh_grants",
    metadata,
    sa.Column("token_hash", sa.String(128), primary_key=True),
    sa.Column("session_id", Id, nullable=False, index=True),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
)

sms_codes = sa.Table(
    "sms_codes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("phone_index", sa.String(128), nullable=False),
    sa.Column("code_hash", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("consumed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_sms_codes_phone_index_id", "phone_index", "id"),
)
