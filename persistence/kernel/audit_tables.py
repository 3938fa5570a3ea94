"""Audit tables (DESIGN D13): the append-only log, its hash chain and the anchors left by pruning.

On PostgreSQL ``audit_log`` is partitioned by month on ``occurred_at`` and its primary key is
``(id, occurred_at)``; ids come from one sequence shared by every partition. These Table objects describe
what INSERT and SELECT need on both dialects; migration ``0002_audit`` holds the partitioning, the triggers
that refuse UPDATE, DELETE and TRUNCATE, and the grants.
"""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import JSONType, UTCDateTime

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("actor", sa.Text(), nullable=True),
    sa.Column("actor_role", sa.Text(), nullable=True),
    sa.Column("object_type", sa.Text(), nullable=True),
    sa.Column("object_id", sa.Text(), nullable=True),
    sa.Column("source_ip", sa.Text(), nullable=True),
    sa.Column("device", sa.Text(), nullable=True),
    sa.Column("request_id", sa.Text(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("details", JSONType, nullable=False),
    sa.CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
    sa.Index("ix_audit_log_actor", "actor", "occurred_at"),
    sa.Index("ix_audit_log_object", "object_type", "object_id"),
    sqlite_autoincrement=True,
)

audit_chain = sa.Table(
    "audit_chain",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=False),
    sa.Column("audit_id", BigId, nullable=False, unique=True),
    sa.Column("hash_hex", sa.String(128), nullable=False),
)

audit_anchor = sa.Table(
    "audit_anchor",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("seq", BigId, nullable=False, unique=True),
    sa.Column("audit_id", BigId, nullable=False),
    sa.Column("hash_hex", sa.String(128), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("dropped_before", UTCDateTime(), nullable=False),
    sa.Column("partitions", JSONType, nullable=False),
    sqlite_autoincrement=True,
)
