"""Notifications: preferences, WeChat subscribe grants, push devices, the delivery log.

Revision ID: 0005_notifications
Revises: 0004_catalogue
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0005_notifications"
down_revision: str | None = "0004_catalogue"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(24), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "event_type", "channel", name="pk_notification_preferences"),
    )
    grant_app("notification_preferences")
    op.create_table(
        "subscribe_grants",
        sa.Column("appid", sa.String(64), nullable=False),
        sa.Column("openid", sa.String(128), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("appid", "openid", "template", name="pk_subscribe_grants"),
        sa.CheckConstraint("remaining >= 0", name="ck_subscribe_grants_remaining_not_negative"),
    )
    op.create_index("ix_subscribe_grants_account_id", "subscribe_grants", ["account_id"])
    grant_app("subscribe_grants")
    op.create_table(
        "push_devices",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("token", sa.String(255), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "token", name="pk_push_devices"),
    )
    op.create_index("ix_push_devices_account_id", "push_devices", ["account_id"])
    grant_app("push_devices")
    op.create_table(
        "notification_deliveries",
        sa.Column("id", BIGID, nullable=False, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("channel", sa.String(24), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("values_cipher", sa.Text(), nullable=False),
        sa.Column("send_after", UTCDateTime(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("provider", sa.String(32), nullable=True),
        sa.Column("provider_message_id", sa.String(128), nullable=True),
        sa.Column("failure", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notification_deliveries"),
        sa.UniqueConstraint("event_id", "account_id", "channel", name="uq_notification_deliveries_key"),
    )
    op.create_index("ix_notification_deliveries_due", "notification_deliveries", ["state", "send_after"])
    op.create_index("ix_notification_deliveries_account", "notification_deliveries", ["account_id", "id"])
    grant_app("notification_deliveries", sequence="notification_deliveries_id_seq")


def downgrade() -> None:
    for table in ("notification_deliveries", "push_devices", "subscribe_grants", "notification_preferences"):
        op.drop_table(table)
