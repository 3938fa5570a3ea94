"""Ports of the patients feature: its repository and the e-health card platform."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from domain.patient.model import Consent, PatientLink, PatientState, Person, PersonMerge


class PatientRepository(Protocol):
    async def lock_account(self, account_id: str) -> None:
        """Serialise changes to one account's patients until the transaction ends."""
        ...

    async def add_person(self, person: Person, *, doc_index: str | None, phone_index: str | None) -> None: ...

    async def save_person(self, person: Person, *, phone_index: str | None) -> None: ...

    async def person(self, person_id: str) -> Person | None:
        """The person as stored, merged or not."""
        ...

    async def resolve(self, person_id: str) -> Person | None:
        """The surviving person after following merges."""
        ...

    async def person_by_document(self, doc_index: str) -> Person | None:
        """The surviving person holding this document."""
        ...

    async def person_by_card(self, health_card_id: str) -> Person | None: ...

    async def links(self, account_id: str, *, states: Sequence[PatientState]) -> Sequence[PatientLink]: ...

    async def link(self, account_id: str, patient_id: str) -> PatientLink | None: ...

    async def links_of_person(self, person_id: str) -> Sequence[PatientLink]: ...

    async def add_link(self, link: PatientLink) -> None: ...

    async def save_link(self, link: PatientLink) -> None: ...

    async def add_consent(self, consent: Consent) -> None: ...

    async def consents(self, person_id: str) -> Sequence[Consent]: ...

    async def withdraw_consents(self, account_id: str, person_id: str, kind: str, *, now: datetime) -> int:
        """Mark this account's live consents of ``kind`` for the person withdrawn; the records stay."""
        ...

    async def hospital_patid(self, person_id: str, hospital_code: str) -> str | None: ...

    async def set_hospital_patid(self, person_id: str, hospital_code: str, patid: str, *, now: datetime) -> bool:
        """Record the HIS's patient id once; False when another writer recorded one first."""
        ...

    async def add_merge(self, merge: PersonMerge) -> None: ...

    async def merge(self, merge_id: str) -> PersonMerge | None: ...

    async def undo_merge(self, merge_id: str, *, now: datetime) -> None: ...


# ---------------------------------------------------------------------------------------------------- card platform


@dataclass(frozen=True, slots=True)
class CardHolder:
    """What the card platform knows of a card's holder (to compare with the patient before binding)."""

    health_card_id: str
    phid: str | None
    qr_code_text: str = field(repr=False)
    name: str = field(repr=False)
    id_type: str
    id_number: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CardRegistration:
    name: str = field(repr=False)
    sex: str
    birth_date: str
    id_type: str
    id_number: str = field(repr=False)
    phone: str | None = field(default=None, repr=False)
    wechat_code: str | None = None
    relation: str | None = None


@dataclass(frozen=True, slots=True)
class DynamicCode:
    qr_code_text: str = field(repr=False)
    png: bytes = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CardUse:
    qr_code_text: str = field(repr=False)
    at: datetime
    hospital_code: str
    scene: str
    department: str
    card_type: str
    card_channel: str
    cost_types: str


class HealthCardPlatform(Protocol):
    """The national e-health card platform. Its own errors (``healthcard.*`` codes: a used health code, an
    expired dynamic code, the platform unavailable) pass through to the caller unchanged."""

    async def register(self, registration: CardRegistration) -> CardHolder:
        """Needs ``registration.wechat_code`` (from the card platform's WeChat authorisation page)."""
        ...

    async def by_health_code(self, health_code: str, *, relate_app_id: str, relate_open_id: str) -> CardHolder: ...

    async def by_qr_code(self, qr_code_text: str) -> CardHolder: ...

    async def dynamic_code(
        self, health_card_id: str, *, id_type: str, id_number: str, relate_app_id: str, relate_open_id: str
    ) -> DynamicCode: ...

    async def report_use(self, use: CardUse, *, relate_app_id: str, relate_open_id: str) -> None: ...

    def static_png(self, qr_code_text: str) -> bytes:
        """A PNG of the card's static QR code."""
        ...
