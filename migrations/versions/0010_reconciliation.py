"""Daily payment reconciliation: one report per day and channel, its differences and repairs; the ledger's
success times indexed for reading it by day.

Revision ID: 0010_reconciliation
Revises: 0009_bill_payments
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0010_reconciliation"
down_revision: str | None = "0009_bill_payments"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("failure", sa.String(64), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        *(
            sa.Column(f"{side}_{what}", sa.BigInteger(), nullable=False, server_default="0")
            for side in ("bill", "ledger", "matched")
            for what in ("payments", "payment_fen", "refunds", "refund_fen")
        ),
        sa.Column("differences", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("repairs", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_runs"),
        sa.UniqueConstraint("day", "channel", name="uq_reconciliation_runs_day_channel"),
    )
    op.create_table(
        "reconciliation_differences",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("line_kind", sa.String(8), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("out_refund_no", sa.String(64), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("channel_fen", sa.BigInteger(), nullable=True),
        sa.Column("ledger_fen", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_reconciliation_differences"),
    )
    op.create_table(
        "reconciliation_repairs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("line_kind", sa.String(8), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("out_refund_no", sa.String(64), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_reconciliation_repairs"),
    )
    op.create_index("ix_payment_orders_paid_at", "payment_orders", ["paid_at"])
    op.create_index("ix_payment_refunds_state_updated_at", "payment_refunds", ["state", "updated_at"])
    # A report is replaced by the next run of its (day, channel); the ledger itself stays read-only here.
    grant_app("reconciliation_runs", "SELECT, INSERT, UPDATE, DELETE")
    grant_app("reconciliation_differences", "SELECT, INSERT, DELETE")
    grant_app("reconciliation_repairs", "SELECT, INSERT, DELETE")


def downgrade() -> None:
    op.drop_index("ix_payment_refunds_state_updated_at", table_name="payment_refunds")
    op.drop_index("ix_payment_orders_paid_at", table_name="payment_orders")
    for table in ("reconciliation_repairs", "reconciliation_differences", "reconciliation_runs"):
        op.drop_table(table)
