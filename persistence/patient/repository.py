"""The patients repository on SQLAlchemy Core: personal fields are encrypted here, with the column's name bound
as the cipher's context, so that a value copied to another column does not decrypt (DESIGN D5)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.kernel.crypto import FieldCipher
from domain.patient.model import (
    Consent,
    ConsentKind,
    PatientLink,
    PatientState,
    Person,
    PersonMerge,
    Relationship,
    VerificationMethod,
)
from domain.patient.use_cases import AlreadyAddedError, SecondSelfError
from persistence.account.tables import resident_accounts
from persistence.patient.tables import consents, hospital_patients, patients, person_merges, persons

_MAX_MERGE_HOPS = 8


class SqlPatientRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher | None) -> None:
        self._conn = conn
        self._cipher = cipher

    # ------------------------------------------------------------------ encryption

    def _enc(self, value: str | None, context: str) -> str | None:
        if value is None:
            return None
        if self._cipher is None:
            raise RuntimeError("the patients repository needs a cipher")
        return self._cipher.encrypt(value.encode(), context=context)

    def _dec(self, token: str | None, context: str) -> str | None:
        if token is None:
            return None
        if self._cipher is None:
            raise RuntimeError("the patients repository needs a cipher")
        return self._cipher.decrypt(token, context=context).decode()

    def _person_values(self, person: Person, phone_index: str | None) -> dict[str, Any]:
        return {
            "name_cipher": self._enc(person.name, "person.name"),
            "sex": person.sex,
            "birth_date": person.birth_date,
            "doc_type": person.doc_type,
            "doc_sub_type": person.doc_sub_type,
            "doc_cipher": self._enc(person.doc_number, "person.document"),
            "phone_cipher": self._enc(person.phone, "person.phone"),
            "phone_index": phone_index,
            "guardian_person_id": person.guardian_person_id,
            "verified_at": person.verified_at,
            "verification": person.verification.value if person.verification else None,
            "health_card_id": person.health_card_id,
            "phid": person.phid,
            "card_qr_cipher": self._enc(person.card_qr_text, "person.card_qr"),
            "merged_into": person.merged_into,
        }

    def _person(self, row: RowMapping) -> Person:
        name = self._dec(row["name_cipher"], "person.name")
        assert name is not None
        return Person(
            id=row["id"],
            name=name,
            sex=row["sex"],
            birth_date=row["birth_date"],
            created_at=row["created_at"],
            doc_type=row["doc_type"],
            doc_sub_type=row["doc_sub_type"],
            doc_number=self._dec(row["doc_cipher"], "person.document"),
            phone=self._dec(row["phone_cipher"], "person.phone"),
            guardian_person_id=row["guardian_person_id"],
            verified_at=row["verified_at"],
            verification=VerificationMethod(row["verification"]) if row["verification"] else None,
            health_card_id=row["health_card_id"],
            phid=row["phid"],
            card_qr_text=self._dec(row["card_qr_cipher"], "person.card_qr"),
            merged_into=row["merged_into"],
        )

    # ------------------------------------------------------------------ persons

    async def lock_account(self, account_id: str) -> None:
        await self._conn.execute(
            sa.select(resident_accounts.c.id).where(resident_accounts.c.id == account_id).with_for_update()
        )

    async def add_person(self, person: Person, *, doc_index: str | None, phone_index: str | None) -> None:
        values = self._person_values(person, phone_index)
        await self._conn.execute(
            persons.insert().values(
                id=person.id, doc_index=doc_index, created_at=person.created_at, updated_at=person.created_at, **values
            )
        )

    async def save_person(self, person: Person, *, phone_index: str | None) -> None:
        values = self._person_values(person, phone_index)
        await self._conn.execute(
            persons.update().where(persons.c.id == person.id).values(updated_at=sa.func.now(), **values)
        )

    async def person(self, person_id: str) -> Person | None:
        row = (await self._conn.execute(sa.select(persons).where(persons.c.id == person_id))).mappings().first()
        return self._person(row) if row else None

    async def resolve(self, person_id: str) -> Person | None:
        person = await self.person(person_id)
        hops = 0
        while person is not None and person.merged_into is not None and hops < _MAX_MERGE_HOPS:
            person = await self.person(person.merged_into)
            hops += 1
        return person

    async def person_by_document(self, doc_index: str) -> Person | None:
        row = (
            (await self._conn.execute(sa.select(persons.c.id).where(persons.c.doc_index == doc_index)))
            .mappings()
            .first()
        )
        return await self.resolve(row["id"]) if row else None

    async def person_by_card(self, health_card_id: str) -> Person | None:
        row = (
            (await self._conn.execute(sa.select(persons.c.id).where(persons.c.health_card_id == health_card_id)))
            .mappings()
            .first()
        )
        return await self.resolve(row["id"]) if row else None

    # ------------------------------------------------------------------ links

    @staticmethod
    def _link(row: RowMapping) -> PatientLink:
        return PatientLink(
            id=row["id"],
            account_id=row["account_id"],
            person_id=row["person_id"],
            relationship=Relationship(row["relationship"]),
            state=PatientState(row["state"]),
            created_at=row["created_at"],
            confirmed_at=row["confirmed_at"],
            removed_at=row["removed_at"],
            confirm_code_hash=row["confirm_code_hash"],
            confirm_expires_at=row["confirm_expires_at"],
            confirm_attempts=row["confirm_attempts"],
        )

    async def links(self, account_id: str, *, states: Sequence[PatientState]) -> Sequence[PatientLink]:
        rows = (
            await self._conn.execute(
                sa.select(patients)
                .where(patients.c.account_id == account_id, patients.c.state.in_([s.value for s in states]))
                .order_by(
                    sa.case((patients.c.relationship == Relationship.SELF.value, 0), else_=1),
                    patients.c.created_at,
                    patients.c.id,
                )
            )
        ).mappings()
        return [self._link(row) for row in rows]

    async def link(self, account_id: str, patient_id: str) -> PatientLink | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(patients).where(patients.c.id == patient_id, patients.c.account_id == account_id)
                )
            )
            .mappings()
            .first()
        )
        return self._link(row) if row else None

    async def links_of_person(self, person_id: str) -> Sequence[PatientLink]:
        merged = sa.select(persons.c.id).where(persons.c.merged_into == person_id)
        rows = (
            await self._conn.execute(
                sa.select(patients).where(
                    sa.or_(patients.c.person_id == person_id, patients.c.person_id.in_(merged)),
                    patients.c.state != PatientState.REMOVED.value,
                )
            )
        ).mappings()
        return [self._link(row) for row in rows]

    def _link_values(self, link: PatientLink) -> dict[str, Any]:
        return {
            "relationship": link.relationship.value,
            "state": link.state.value,
            "confirmed_at": link.confirmed_at,
            "removed_at": link.removed_at,
            "confirm_code_hash": link.confirm_code_hash,
            "confirm_expires_at": link.confirm_expires_at,
            "confirm_attempts": link.confirm_attempts,
        }

    async def add_link(self, link: PatientLink) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    patients.insert().values(
                        id=link.id,
                        account_id=link.account_id,
                        person_id=link.person_id,
                        created_at=link.created_at,
                        **self._link_values(link),
                    )
                )
        except IntegrityError as exc:
            if "uq_patients_self" in str(exc.orig):
                raise SecondSelfError("a self patient exists") from None
            raise AlreadyAddedError("already managed by this account") from None

    async def save_link(self, link: PatientLink) -> None:
        await self._conn.execute(patients.update().where(patients.c.id == link.id).values(**self._link_values(link)))

    # ------------------------------------------------------------------ consents

    async def add_consent(self, consent: Consent) -> None:
        await self._conn.execute(
            consents.insert().values(
                id=consent.id,
                account_id=consent.account_id,
                person_id=consent.person_id,
                kind=consent.kind.value,
                version=consent.version,
                channel=consent.channel,
                granted_at=consent.granted_at,
            )
        )

    async def consents(self, person_id: str) -> Sequence[Consent]:
        rows = (
            await self._conn.execute(
                sa.select(consents).where(consents.c.person_id == person_id).order_by(consents.c.granted_at)
            )
        ).mappings()
        return [
            Consent(
                r["id"],
                r["account_id"],
                r["person_id"],
                ConsentKind(r["kind"]),
                r["version"],
                r["channel"],
                r["granted_at"],
                r["withdrawn_at"],
            )
            for r in rows
        ]

    async def withdraw_consents(self, account_id: str, person_id: str, kind: str, *, now: datetime) -> int:
        result = await self._conn.execute(
            consents.update()
            .where(
                consents.c.account_id == account_id,
                consents.c.person_id == person_id,
                consents.c.kind == kind,
                consents.c.withdrawn_at.is_(None),
            )
            .values(withdrawn_at=now)
        )
        return int(result.rowcount or 0)

    # ------------------------------------------------------------------ hospital records

    async def hospital_patid(self, person_id: str, hospital_code: str) -> str | None:
        value = (
            await self._conn.execute(
                sa.select(hospital_patients.c.patid).where(
                    hospital_patients.c.person_id == person_id, hospital_patients.c.hospital_code == hospital_code
                )
            )
        ).scalar_one_or_none()
        return str(value) if value is not None else None

    async def set_hospital_patid(self, person_id: str, hospital_code: str, patid: str, *, now: datetime) -> bool:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    hospital_patients.insert().values(
                        person_id=person_id, hospital_code=hospital_code, patid=patid, created_at=now
                    )
                )
        except IntegrityError:
            return False
        return True

    # ------------------------------------------------------------------ merges

    async def add_merge(self, merge: PersonMerge) -> None:
        await self._conn.execute(
            person_merges.insert().values(
                id=merge.id,
                source_person_id=merge.source_person_id,
                target_person_id=merge.target_person_id,
                actor=merge.actor,
                reason=merge.reason,
                merged_at=merge.merged_at,
            )
        )
        await self._conn.execute(
            persons.update()
            .where(persons.c.id == merge.source_person_id)
            .values(merged_into=merge.target_person_id, updated_at=merge.merged_at)
        )

    async def merge(self, merge_id: str) -> PersonMerge | None:
        row = (
            (await self._conn.execute(sa.select(person_merges).where(person_merges.c.id == merge_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return PersonMerge(
            row["id"],
            row["source_person_id"],
            row["target_person_id"],
            row["actor"],
            row["reason"],
            row["merged_at"],
            row["undone_at"],
        )

    async def undo_merge(self, merge_id: str, *, now: datetime) -> None:
        merge = await self.merge(merge_id)
        if merge is None:
            return
        await self._conn.execute(person_merges.update().where(person_merges.c.id == merge_id).values(undone_at=now))
        await self._conn.execute(
            persons.update()
            .where(persons.c.id == merge.source_person_id, persons.c.merged_into == merge.target_person_id)
            .values(merged_into=None, updated_at=now)
        )
