"""Persons (encrypted personal fields, blind indexes for lookups), account links, consents, hospital patient
ids and merges (ID-031, ID-033; DESIGN D4, D5)."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.metadata import metadata
from persistence.types import Id, UTCDateTime

persons = sa.Table(
    "persons",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name_cipher", sa.Text(), nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("birth_date", sa.Date(), nullable=False),
    sa.Column("doc_type", sa.String(4), nullable=True),
    sa.Column("doc_sub_type", sa.String(32), nullable=True),
    sa.Column("doc_cipher", sa.Text(), nullable=True),
    sa.Column("doc_index", sa.String(64), nullable=True),
    sa.Column("phone_cipher", sa.Text(), nullable=True),
    sa.Column("phone_index", sa.String(64), nullable=True, index=True),
    sa.Column("guardian_person_id", Id, nullable=True),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
    sa.Column("verification", sa.String(16), nullable=True),
    sa.Column("health_card_id", sa.String(80), nullable=True),
    sa.Column("phid", sa.String(64), nullable=True),
    sa.Column("card_qr_cipher", sa.Text(), nullable=True),
    sa.Column("merged_into", Id, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("uq_persons_doc_index", "doc_index", unique=True),
    sa.Index("uq_persons_health_card", "health_card_id", unique=True),
)

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("person_id", Id, nullable=False, index=True),
    sa.Column("relationship", sa.String(16), nullable=False),
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("confirmed_at", UTCDateTime(), nullable=True),
    sa.Column("removed_at", UTCDateTime(), nullable=True),
    sa.Column("confirm_code_hash", sa.String(128), nullable=True),
    sa.Column("confirm_expires_at", UTCDateTime(), nullable=True),
    sa.Column("confirm_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_patients_account", "account_id", "state"),
    # One "self" and one live link per person on an account, whatever the service checks first.
    sa.Index(
        "uq_patients_self",
        "account_id",
        unique=True,
        postgresql_where=sa.text("relationship = 'self' AND state <> 'removed'"),
        sqlite_where=sa.text("relationship = 'self' AND state <> 'removed'"),
    ),
    sa.Index(
        "uq_patients_person",
        "account_id",
        "person_id",
        unique=True,
        postgresql_where=sa.text("state <> 'removed'"),
        sqlite_where=sa.text("state <> 'removed'"),
    ),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=False, index=True),
    sa.Column("person_id", Id, nullable=False, index=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("granted_at", UTCDateTime(), nullable=False),
    sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
)

hospital_patients = sa.Table(
    "hospital_patients",
    metadata,
    sa.Column("person_id", Id, primary_key=True),
    sa.Column("hospital_code", sa.String(32), primary_key=True),
    sa.Column("patid", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

person_merges = sa.Table(
    "person_merges",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("source_person_id", Id, nullable=False, index=True),
    sa.Column("target_person_id", Id, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("merged_at", UTCDateTime(), nullable=False),
    sa.Column("undone_at", UTCDateTime(), nullable=True),
)
