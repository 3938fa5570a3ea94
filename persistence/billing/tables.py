"""Bill payments (诊间支付): which payment order pays which HIS bill, and how its settlement went. Amounts are
integer fen; no ID numbers or phones (the person id and the hospital's patient id are enough to settle)."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

_LIVE = "state IN ('pending', 'settled')"

bill_payments = sa.Table(
    "bill_payments",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("order_id", Id, nullable=False, unique=True),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("patient_id", Id, nullable=False),
    sa.Column("person_id", Id, nullable=False),
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
    sa.CheckConstraint("amount_fen > 0", name="amount_positive"),
    sa.Index("ix_bill_payments_account", "account_id", "created_at"),
    sa.Index("ix_bill_payments_bill", "hospital_code", "bill_id"),
    sa.Index("ix_bill_payments_state", "state", "updated_at"),
    # At most one order at a time pays (or has paid) a bill, whatever the service checks first.
    sa.Index(
        "uq_bill_payments_live",
        "hospital_code",
        "bill_id",
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    ),
)
