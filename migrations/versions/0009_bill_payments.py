"""Outpatient bill payments (诊间支付): which payment order pays which HIS bill, and how its settlement went.

Revision ID: 0009_bill_payments
Revises: 0008_payments
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0009_bill_payments"
down_revision: str | None = "0008_payments"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
_LIVE = "state IN ('pending', 'settled')"


def upgrade() -> None:
    op.create_table(
        "bill_payments",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("bill_id", sa.String(64), nullable=False),
        sa.Column("patid", sa.String(64), nullable=False),
        sa.Column("title", sa.String(128), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("his_receipt_no", sa.String(64), nullable=True),
        sa.Column("refusal", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name="ck_bill_payments_amount_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_bill_payments"),
        sa.UniqueConstraint("order_id", name="uq_bill_payments_order_id"),
    )
    op.create_index("ix_bill_payments_account", "bill_payments", ["account_id", "created_at"])
    op.create_index("ix_bill_payments_bill", "bill_payments", ["hospital_code", "bill_id"])
    op.create_index("ix_bill_payments_state", "bill_payments", ["state", "updated_at"])
    # At most one order at a time pays (or has paid) a bill, whatever the service checks first.
    op.create_index(
        "uq_bill_payments_live",
        "bill_payments",
        ["hospital_code", "bill_id"],
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    )
    # Part of the payment ledger: never deleted from by the application.
    grant_app("bill_payments", "SELECT, INSERT, UPDATE")


def downgrade() -> None:
    op.drop_table("bill_payments")
