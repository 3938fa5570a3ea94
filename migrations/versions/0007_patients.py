"""Persons, patients (account links), consents, hospital patient ids and person merges.

Revision ID: 0007_patients
Revises: 0006_scheduled_messages
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.helpers import grant_app
from persistence.types import UTCDateTime

revision: str = "0007_patients"
down_revision: str | None = "0006_scheduled_messages"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", ID, nullable=False),
        sa.Column("name_cipher", sa.Text(), nullable=False),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("doc_type", sa.String(4), nullable=True),
        sa.Column("doc_sub_type", sa.String(32), nullable=True),
        sa.Column("doc_cipher", sa.Text(), nullable=True),
        sa.Column("doc_index", sa.String(64), nullable=True),
        sa.Column("phone_cipher", sa.Text(), nullable=True),
        sa.Column("phone_index", sa.String(64), nullable=True),
        sa.Column("guardian_person_id", ID, nullable=True),
        sa.Column("verified_at", UTCDateTime(), nullable=True),
        sa.Column("verification", sa.String(16), nullable=True),
        sa.Column("health_card_id", sa.String(80), nullable=True),
        sa.Column("phid", sa.String(64), nullable=True),
        sa.Column("card_qr_cipher", sa.Text(), nullable=True),
        sa.Column("merged_into", ID, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_persons"),
    )
    op.create_index("uq_persons_doc_index", "persons", ["doc_index"], unique=True)
    op.create_index("uq_persons_health_card", "persons", ["health_card_id"], unique=True)
    op.create_index("ix_persons_phone_index", "persons", ["phone_index"])
    op.create_table(
        "patients",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("relationship", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("confirm_code_hash", sa.String(128), nullable=True),
        sa.Column("confirm_expires_at", UTCDateTime(), nullable=True),
        sa.Column("confirm_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
    )
    op.create_index("ix_patients_account", "patients", ["account_id", "state"])
    op.create_index("ix_patients_person_id", "patients", ["person_id"])
    live_self = sa.text("relationship = 'self' AND state <> 'removed'")
    op.create_index(
        "uq_patients_self", "patients", ["account_id"], unique=True, postgresql_where=live_self, sqlite_where=live_self
    )
    live = sa.text("state <> 'removed'")
    op.create_index(
        "uq_patients_person",
        "patients",
        ["account_id", "person_id"],
        unique=True,
        postgresql_where=live,
        sqlite_where=live,
    )
    op.create_table(
        "consents",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("person_id", ID, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
    )
    op.create_index("ix_consents_account_id", "consents", ["account_id"])
    op.create_index("ix_consents_person_id", "consents", ["person_id"])
    op.create_table(
        "hospital_patients",
        sa.Column("person_id", ID, nullable=False),
        sa.Column("hospital_code", sa.String(32), nullable=False),
        sa.Column("patid", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("person_id", "hospital_code", name="pk_hospital_patients"),
    )
    op.create_table(
        "person_merges",
        sa.Column("id", ID, nullable=False),
        sa.Column("source_person_id", ID, nullable=False),
        sa.Column("target_person_id", ID, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("merged_at", UTCDateTime(), nullable=False),
        sa.Column("undone_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_person_merges"),
    )
    op.create_index("ix_person_merges_source_person_id", "person_merges", ["source_person_id"])
    # Consents are evidence: the app may add and read them, and mark a withdrawal, never delete them.
    grant_app("consents", "SELECT, INSERT, UPDATE")
    grant_app("persons", "SELECT, INSERT, UPDATE")
    grant_app("person_merges", "SELECT, INSERT, UPDATE")
    grant_app("patients", "SELECT, INSERT, UPDATE")
    grant_app("hospital_patients", "SELECT, INSERT")


def downgrade() -> None:
    for table in ("person_merges", "hospital_patients", "consents", "patients", "persons"):
        op.drop_table(table)
