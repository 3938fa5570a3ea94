"""Persons and the accounts that manage them (DESIGN D4; ID-020, ID-031, ID-033).

A *person* is one real human, keyed by an internal id, never by an ID number (ID-033). A *patient* is the link
between a resident account and a person: the same child can be managed by both parents' accounts, and limits
that the rules count per person (bookings) count across every link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Literal

Sex = Literal["M", "F"]


class Relationship(StrEnum):
    SELF = "self"
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    OTHER = "other"


class PatientState(StrEnum):
    PENDING = "pending_confirmation"
    """An adult added by someone else who has not yet confirmed: invisible in the account's list."""
    ACTIVE = "active"
    REMOVED = "removed"
    """Soft-removed: the link and the person stay for what the law keeps (SEC-P-07)."""


class VerificationMethod(StrEnum):
    ID_TWO_FACTOR = "id_name"
    """Name and ID number matched against the national registry."""
    ID_THREE_FACTOR = "id_name_phone"
    """Name, ID number and the phone's real-name registration matched."""
    FACE = "face"
    GUARDIAN = "guardian"
    """A child without an ID document, vouched for by a verified guardian (ID-020)."""


class ConsentKind(StrEnum):
    HEALTH_DATA = "health_data"
    """Separate consent to process health data (SEC-P-03, PIPL Art. 28/29)."""
    GUARDIAN = "guardian"
    """A guardian's consent for a child under 14 (SEC-P-04, PIPL Art. 31)."""
    MANAGED_BY = "managed_by"
    """An adult's own consent to be managed by another account."""


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str = field(repr=False)
    sex: Sex
    birth_date: date
    created_at: datetime
    doc_type: str | None = None
    """CV02.01.101 code; None for a child without an ID document."""
    doc_sub_type: str | None = None
    doc_number: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    guardian_person_id: str | None = None
    verified_at: datetime | None = None
    verification: VerificationMethod | None = None
    health_card_id: str | None = None
    phid: str | None = None
    card_qr_text: str | None = field(default=None, repr=False)
    merged_into: str | None = None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        if (day.month, day.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years


@dataclass(frozen=True, slots=True)
class PatientLink:
    id: str
    account_id: str
    person_id: str
    relationship: Relationship
    state: PatientState
    created_at: datetime
    confirmed_at: datetime | None = None
    removed_at: datetime | None = None
    confirm_code_hash: str | None = field(default=None, repr=False)
    confirm_expires_at: datetime | None = None
    confirm_attempts: int = 0


@dataclass(frozen=True, slots=True)
class Consent:
    id: str
    account_id: str
    person_id: str
    kind: ConsentKind
    version: str
    channel: str
    """How it was given: ``app``, ``wechat``, ``alipay``, ``sms`` (the confirming code), ``face``, ``operator``."""
    granted_at: datetime
    withdrawn_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Patient:
    """What a resident sees of one of their patients: the link and its person (merges already resolved)."""

    link: PatientLink
    person: Person


@dataclass(frozen=True, slots=True)
class PersonMerge:
    id: str
    source_person_id: str
    target_person_id: str
    actor: str
    reason: str
    merged_at: datetime
    undone_at: datetime | None = None
