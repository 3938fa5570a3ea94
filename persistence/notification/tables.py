"""Notification preferences, WeChat subscribe grants, push devices and the delivery log."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

notification_preferences = sa.Table(
    "notification_preferences",
    metadata,
    sa.Column("account_id", Id, primary_key=True),
    sa.Column("event_type", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(24), primary_key=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

subscribe_grants = sa.Table(
    "subscribe_grants",
    metadata,
    sa.Column("appid", sa.String(64), primary_key=True),
    sa.Column("openid", sa.String(128), primary_key=True),
    sa.Column("template", sa.String(64), primary_key=True),
    sa.Column("account_id", Id, nullable=False, index=True),
    sa.Column("remaining", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("remaining >= 0", name="remaining_not_negative"),
)

push_devices = sa.Table(
    "push_devices",
    metadata,
    sa.Column("provider", sa.String(16), primary_key=True),
    sa.Column("token", sa.String(255), primary_key=True),
    sa.Column("account_id", Id, nullable=False, index=True),
    sa.Column("registered_at", UTCDateTime(), nullable=False),
)

notification_deliveries = sa.Table(
    "notification_deliveries",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("account_id", Id, nullable=False),
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
    sa.UniqueConstraint("event_id", "account_id", "channel", name="uq_notification_deliveries_key"),
    sa.Index("ix_notification_deliveries_due", "state", "send_after"),
    sa.Index("ix_notification_deliveries_account", "account_id", "id"),
)

scheduled_messages = sa.Table(
    "scheduled_messages",
    metadata,
    sa.Column("id", BIGID, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(160), nullable=False, unique=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("subject_type", sa.String(32), nullable=False),
    sa.Column("subject_id", sa.String(64), nullable=False),
    sa.Column("values_cipher", sa.Text(), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_scheduled_messages_due", "state", "due_at"),
    sa.Index("ix_scheduled_messages_subject", "subject_type", "subject_id"),
)
