"""The payments ledger: orders, attempts (one per prepay), refunds, and the channel events received."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

payment_orders = sa.Table(
    "payment_orders",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("payable_type", sa.String(32), nullable=False),
    sa.Column("payable_id", sa.String(64), nullable=False),
    sa.Column("account_id", Id, nullable=False, index=True),
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
    sa.CheckConstraint("self_pay_fen >= 0 AND insured_fen >= 0", name="amounts_not_negative"),
    sa.Index("ix_payment_orders_payable", "payable_type", "payable_id"),
    sa.Index("ix_payment_orders_state_expiry", "state", "expires_at"),
)

payment_attempts = sa.Table(
    "payment_attempts",
    metadata,
    sa.Column("out_trade_no", sa.String(64), primary_key=True),
    sa.Column("order_id", Id, nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("transaction_id", sa.String(64), nullable=True),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

payment_refunds = sa.Table(
    "payment_refunds",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("order_id", Id, nullable=False, index=True),
    sa.Column("out_refund_no", sa.String(64), nullable=False, unique=True),
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
    sa.CheckConstraint("amount_fen > 0", name="refund_positive"),
    sa.Index("ix_payment_refunds_due", "state", "next_try_at"),
)

payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("event_key", sa.String(128), nullable=False),
    sa.Column("out_trade_no", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("channel", "event_key", name="uq_payment_events_key"),
)
