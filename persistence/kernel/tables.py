"""Kernel tables: outbox, idempotency records, the shared clock offset."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, JSONType, UTCDateTime

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("id", Id, nullable=False, unique=True),
    sa.Column("topic", sa.String(100), nullable=False),
    sa.Column("key", sa.String(200), nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("headers", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("available_at", UTCDateTime(), nullable=False),
    sa.Column("relayed_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Index(
        "ix_outbox_pending",
        "seq",
        postgresql_where=sa.text("relayed_at IS NULL"),
        sqlite_where=sa.text("relayed_at IS NULL"),
    ),
)

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    sa.Column("principal", sa.String(80), primary_key=True),
    sa.Column("method", sa.String(10), primary_key=True),
    sa.Column("route", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("headers", JSONType, nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

clock_offset = sa.Table(
    "clock_offset",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("offset_seconds", sa.Float(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)
