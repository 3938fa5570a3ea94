"""Audit: the append-only log partitioned by month, its hash chain, and pruning anchors (DESIGN D13).

On PostgreSQL:

* ``audit_log`` is partitioned by RANGE (occurred_at): one partition per month from the month before this
  migration runs through 24 months after it, plus a DEFAULT partition so that no insert ever fails. Ids
  come from one sequence shared by all partitions; the primary key is (id, occurred_at).
* A BEFORE UPDATE OR DELETE row trigger on each table refuses the change; on the partitioned parent it is
  cloned to every partition, present and future. A BEFORE TRUNCATE statement trigger sits on the parent and
  on every partition (a partition truncated by name does not fire the parent's statement trigger).
* The application's role gets SELECT and INSERT on ``audit_log`` (and the sequence) and ``audit_chain``,
  SELECT on ``audit_anchor``; PUBLIC gets nothing. The owner alone drops old partitions, and the chain's
  guard lets it delete only links at or behind the latest anchor.

On SQLite (the embedded demo): plain tables, no partitions, triggers or grants.

Revision ID: 0002_audit
Revises: 0001_kernel
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app, is_postgres
from persistence.kernel.audit_admin import (
    REFUSE_FUNCTION,
    TRUNCATE_TRIGGER,
    add_months,
    default_partition_ddl,
    month_partition_ddl,
    month_start,
)
from persistence.types import JSONType, UTCDateTime

revision: str = "0002_audit"
down_revision: str | None = "0001_kernel"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CHAIN_GUARD = "audit_chain_refuse_change"

REFUSE_FUNCTION_DDL = f"""
CREATE FUNCTION {REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit table %: % refused, the audit trail is append-only', TG_TABLE_NAME, TG_OP;
END
$$
"""

CHAIN_GUARD_DDL = f"""
CREATE FUNCTION {CHAIN_GUARD}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.seq <= (SELECT coalesce(max(seq), 0) FROM audit_anchor) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit table %: % refused, the audit trail is append-only', TG_TABLE_NAME, TG_OP;
END
$$
"""


def _refuse_changes(table: str, function: str = REFUSE_FUNCTION) -> None:
    op.execute(
        f'CREATE TRIGGER audit_refuse_change BEFORE UPDATE OR DELETE ON "{table}" '
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    op.execute(
        f'CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON "{table}" '
        f"FOR EACH STATEMENT EXECUTE FUNCTION {REFUSE_FUNCTION}()"
    )
    op.execute(f'REVOKE ALL ON TABLE "{table}" FROM PUBLIC')


def upgrade() -> None:
    pg = is_postgres()
    if pg:
        op.execute("CREATE SEQUENCE audit_log_id_seq AS BIGINT")
        id_column = sa.Column(
            "id", sa.BigInteger(), nullable=False, server_default=sa.text("nextval('audit_log_id_seq')")
        )
        primary_key = sa.PrimaryKeyConstraint("id", "occurred_at", name="pk_audit_log")
    else:
        id_column = sa.Column("id", sa.Integer(), nullable=False)
        primary_key = sa.PrimaryKeyConstraint("id", name="pk_audit_log")
    op.create_table(
        "audit_log",
        id_column,
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
        sa.CheckConstraint("outcome IN ('success', 'failure')", name=op.f("ck_audit_log_outcome")),
        primary_key,
        postgresql_partition_by="RANGE (occurred_at)",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "occurred_at"])
    op.create_index("ix_audit_log_object", "audit_log", ["object_type", "object_id"])

    op.create_table(
        "audit_chain",
        sa.Column("seq", BigId, nullable=False, autoincrement=False),
        sa.Column("audit_id", BigId, nullable=False),
        sa.Column("hash_hex", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_chain"),
        sa.UniqueConstraint("audit_id", name="uq_audit_chain_audit_id"),
    )
    op.create_table(
        "audit_anchor",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("seq", BigId, nullable=False),
        sa.Column("audit_id", BigId, nullable=False),
        sa.Column("hash_hex", sa.String(128), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("dropped_before", UTCDateTime(), nullable=False),
        sa.Column("partitions", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchor"),
        sa.UniqueConstraint("seq", name="uq_audit_anchor_seq"),
        sqlite_autoincrement=True,
    )
    if not pg:
        return

    op.execute("ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id")
    op.execute(REFUSE_FUNCTION_DDL)
    op.execute(CHAIN_GUARD_DDL)
    _refuse_changes("audit_log")
    _refuse_changes("audit_chain", CHAIN_GUARD)
    _refuse_changes("audit_anchor")
    for statement in default_partition_ddl():
        op.execute(statement)
    first = add_months(month_start(datetime.now(UTC)), -1)
    for offset in range(26):
        for statement in month_partition_ddl(add_months(first, offset)):
            op.execute(statement)

    grant_app("audit_log", "SELECT, INSERT", sequence="audit_log_id_seq")
    grant_app("audit_chain", "SELECT, INSERT")
    grant_app("audit_anchor", "SELECT")


def downgrade() -> None:
    op.drop_table("audit_anchor")
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_log_object", table_name="audit_log")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_table("audit_log")  # on PostgreSQL its partitions and its sequence go with it
    if is_postgres():
        op.execute(f"DROP FUNCTION {CHAIN_GUARD}()")
        op.execute(f"DROP FUNCTION {REFUSE_FUNCTION}()")
