"""Payment orders, their attempts (one per prepay), refunds, and the channel events received.

Revision ID: 0008_payments
Revises: 0007_patients
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0008_payments"
down_revision: str | None = "0007_patients"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payment_orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("payable_type", sa.String(32), nullable=False),
        sa.Column("payable_id", sa.String(64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("description", sa.String(128), nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), nullable=False),
        sa.Column("insured_fen", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("paid_out_trade_no", sa.String(64), nullable=True),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("next_query_at", UTCDateTime(), nullable=True),
        sa.Column("query_tries", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("self_pay_fen >= 0 AND insured_fen >= 0", name="ck_payment_orders_amounts_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_payment_orders"),
    )
    op.create_index("ix_payment_orders_account_id", "payment_orders", ["account_id"])
    op.create_index("ix_payment_orders_payable", "payment_orders", ["payable_type", "payable_id"])
    op.create_index("ix_payment_orders_state_expiry", "payment_orders", ["state", "expires_at"])
    op.create_table(
        "payment_attempts",
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("out_trade_no", name="pk_payment_attempts"),
    )
    op.create_index("ix_payment_attempts_order_id", "payment_attempts", ["order_id"])
    op.create_table(
        "payment_refunds",
        sa.Column("id", sa.String(80), nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("out_refund_no", sa.String(64), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure", sa.String(64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_try_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name="ck_payment_refunds_refund_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_payment_refunds"),
        sa.UniqueConstraint("out_refund_no", name="uq_payment_refunds_out_refund_no"),
    )
    op.create_index("ix_payment_refunds_order_id", "payment_refunds", ["order_id"])
    op.create_index("ix_payment_refunds_due", "payment_refunds", ["state", "next_try_at"])
    op.create_table(
        "payment_events",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("event_key", sa.String(128), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_payment_events"),
        sa.UniqueConstraint("channel", "event_key", name="uq_payment_events_key"),
    )
    op.create_index("ix_payment_events_out_trade_no", "payment_events", ["out_trade_no"])
    # The ledger is never deleted from by the application.
    grant_app("payment_orders", "SELECT, INSERT, UPDATE")
    grant_app("payment_attempts", "SELECT, INSERT, UPDATE")
    grant_app("payment_refunds", "SELECT, INSERT, UPDATE")
    grant_app("payment_events", "SELECT, INSERT, UPDATE", sequence="payment_events_id_seq")


def downgrade() -> None:
    for table in ("payment_events", "payment_refunds", "payment_attempts", "payment_orders"):
        op.drop_table(table)
