"""The catalogue repository: registry, synced copy, conflicts, and the reads residents browse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.catalogue.model import (
    CapacityConflict,
    Department,
    Doctor,
    DoctorTitle,
    Hospital,
    HospitalLevel,
    Period,
    ScheduleSession,
    SessionStatus,
    SessionView,
    Slot,
    SlotView,
)
from domain.catalogue.ports import StoredSession, StoredSlot
from domain.catalogue.rules import BookingRules, NoShowRule
from domain.kernel.crypto import FieldCipher
from persistence.catalogue.tables import (
    capacity_conflicts,
    catalogue_sync_state,
    clinic_sessions,
    clinic_slots,
    departments,
    doctors,
    hospitals,
)

_SECRET_CONTEXT = "hospital.callback_secret"  # noqa: S105  (an encryption context label, not a secret)


def rules_to_json(rules: BookingRules) -> dict[str, Any]:
    return {
        "window_days": rules.window_days,
        "release_time": rules.release_time.strftime("%H:%M"),
        "allow_same_day": rules.allow_same_day,
        "cancel_cutoff_hours_before": rules.cancel_cutoff_hours_before,
        "cancel_cutoff_day_before_at": rules.cancel_cutoff_day_before_at.strftime("%H:%M"),
        "payment_minutes": rules.payment_minutes,
        "checkin_before_minutes": rules.checkin_before_minutes,
        "checkin_after_minutes": rules.checkin_after_minutes,
        "no_show_rules": [
            {"event": r.event, "count": r.count, "window_days": r.window_days, "ban_days": r.ban_days}
            for r in rules.no_show_rules
        ],
        "lock_at_his": rules.lock_at_his,
    }


def rules_from_json(data: dict[str, Any]) -> BookingRules:
    defaults = BookingRules()
    return BookingRules(
        window_days=int(data.get("window_days", defaults.window_days)),
        release_time=time.fromisoformat(data.get("release_time", "08:00")),
        allow_same_day=bool(data.get("allow_same_day", defaults.allow_same_day)),
        cancel_cutoff_hours_before=int(data.get("cancel_cutoff_hours_before", 0)),
        cancel_cutoff_day_before_at=time.fromisoformat(data.get("cancel_cutoff_day_before_at", "15:00")),
        payment_minutes=int(data.get("payment_minutes", defaults.payment_minutes)),
        checkin_before_minutes=int(data.get("checkin_before_minutes", defaults.checkin_before_minutes)),
        checkin_after_minutes=int(data.get("checkin_after_minutes", defaults.checkin_after_minutes)),
        no_show_rules=tuple(NoShowRule(**r) for r in data.get("no_show_rules", [])) or defaults.no_show_rules,
        lock_at_his=bool(data.get("lock_at_his", False)),
    )


def _search_text(doctor: Doctor) -> str:
    return " ".join([doctor.name, *doctor.specialties, doctor.introduction]).lower()


class SqlCatalogueRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher | None = None) -> None:
        self._c = conn
        self._cipher = cipher

    # registry ----------------------------------------------------------------

    def _hospital(self, row: RowMapping) -> Hospital:
        secret = None
        if row["callback_secret_cipher"] and self._cipher is not None:
            secret = self._cipher.decrypt(row["callback_secret_cipher"], context=_SECRET_CONTEXT).decode()
        return Hospital(
            code=row["code"],
            name=row["name"],
            level=HospitalLevel(row["level"]),
            region_code=row["region_code"],
            address=row["address"],
            phone=row["phone"],
            adapter=row["adapter"],
            adapter_settings=dict(row["adapter_settings"] or {}),
            pool_share_percent=row["pool_share_percent"],
            rules=rules_from_json(row["rules"] or {}),
            active=row["active"],
            callback_secret=secret,
        )

    def _hospital_values(self, hospital: Hospital) -> dict[str, Any]:
        cipher = None
        if hospital.callback_secret:
            if self._cipher is None:
                raise RuntimeError("a callback secret needs the field cipher")
            cipher = self._cipher.encrypt(hospital.callback_secret.encode(), context=_SECRET_CONTEXT)
        return {
            "name": hospital.name,
            "level": hospital.level.value,
            "region_code": hospital.region_code,
            "address": hospital.address,
            "phone": hospital.phone,
            "adapter": hospital.adapter,
            "adapter_settings": dict(hospital.adapter_settings),
            "pool_share_percent": hospital.pool_share_percent,
            "rules": rules_to_json(hospital.rules),
            "active": hospital.active,
            "callback_secret_cipher": cipher,
        }

    async def hospital(self, code: str) -> Hospital | None:
        row = (await self._c.execute(sa.select(hospitals).where(hospitals.c.code == code))).mappings().first()
        return self._hospital(row) if row else None

    async def add_hospital(self, hospital: Hospital, *, now: datetime) -> None:
        await self._c.execute(
            hospitals.insert().values(
                code=hospital.code, created_at=now, updated_at=now, **self._hospital_values(hospital)
            )
        )

    async def save_hospital(self, hospital: Hospital, *, now: datetime) -> None:
        await self._c.execute(
            hospitals.update()
            .where(hospitals.c.code == hospital.code)
            .values(updated_at=now, **self._hospital_values(hospital))
        )

    async def hospitals(
        self,
        *,
        region_prefix: str | None,
        level: HospitalLevel | None,
        active_only: bool,
        after: str | None,
        limit: int,
    ) -> Sequence[Hospital]:
        query = sa.select(hospitals).order_by(hospitals.c.code).limit(limit)
        if region_prefix:
            query = query.where(hospitals.c.region_code.startswith(region_prefix, autoescape=True))
        if level is not None:
            query = query.where(hospitals.c.level == level.value)
        if active_only:
            query = query.where(hospitals.c.active.is_(True))
        if after:
            query = query.where(hospitals.c.code > after)
        return [self._hospital(r) for r in (await self._c.execute(query)).mappings()]

    # synced copy ---------------------------------------------------------------

    async def upsert_departments(self, hospital_code: str, items: Sequence[Department], *, now: datetime) -> int:
        existing = {
            r["code"]: r
            for r in (
                await self._c.execute(sa.select(departments).where(departments.c.hospital_code == hospital_code))
            ).mappings()
        }
        changed = 0
        for d in items:
            values = {"name": d.name, "parent_code": d.parent_code, "description": d.description}
            row = existing.get(d.code)
            if row is None:
                await self._c.execute(
                    departments.insert().values(hospital_code=hospital_code, code=d.code, synced_at=now, **values)
                )
                changed += 1
            elif any(row[k] != v for k, v in values.items()):
                await self._c.execute(
                    departments.update()
                    .where(departments.c.hospital_code == hospital_code, departments.c.code == d.code)
                    .values(synced_at=now, **values)
                )
                changed += 1
        return changed

    async def upsert_doctors(self, hospital_code: str, items: Sequence[Doctor], *, now: datetime) -> int:
        existing = {
            r["code"]: r
            for r in (
                await self._c.execute(sa.select(doctors).where(doctors.c.hospital_code == hospital_code))
            ).mappings()
        }
        changed = 0
        for d in items:
            values = {
                "name": d.name,
                "title": d.title.value,
                "department_codes": list(d.department_codes),
                "specialties": list(d.specialties),
                "search_text": _search_text(d),
                "introduction": d.introduction,
                "on_leave": d.on_leave,
            }
            row = existing.get(d.code)
            if row is None:
                await self._c.execute(
                    doctors.insert().values(hospital_code=hospital_code, code=d.code, synced_at=now, **values)
                )
                changed += 1
            elif any(row[k] != v for k, v in values.items()):
                await self._c.execute(
                    doctors.update()
                    .where(doctors.c.hospital_code == hospital_code, doctors.c.code == d.code)
                    .values(synced_at=now, **values)
                )
                changed += 1
        return changed

    async def stored_session(
        self, hospital_code: str, session_id: str, *, for_update: bool = False
    ) -> StoredSession | None:
        query = sa.select(clinic_sessions).where(
            clinic_sessions.c.hospital_code == hospital_code, clinic_sessions.c.id == session_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._c.execute(query)).mappings().first()
        if row is None:
            return None
        return StoredSession(
            session_id=row["id"],
            status=SessionStatus(row["status"]),
            version=row["version"],
            doctor_code=row["doctor_code"],
        )

    async def upsert_session(self, session: ScheduleSession, *, now: datetime) -> bool:
        values = {
            "department_code": session.department_code,
            "doctor_code": session.doctor_code,
            "day": session.day,
            "period": session.period.value,
            "status": session.status.value,
            "fee_fen": session.fee_fen,
            "stop_reason": session.stop_reason,
            "version": session.version,
        }
        row = (
            (
                await self._c.execute(
                    sa.select(clinic_sessions).where(
                        clinic_sessions.c.hospital_code == session.hospital_code, clinic_sessions.c.id == session.id
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            await self._c.execute(
                clinic_sessions.insert().values(
                    hospital_code=session.hospital_code, id=session.id, synced_at=now, **values
                )
            )
            return True
        if all(row[k] == v for k, v in values.items()):
            return False
        await self._c.execute(
            clinic_sessions.update()
            .where(clinic_sessions.c.hospital_code == session.hospital_code, clinic_sessions.c.id == session.id)
            .values(synced_at=now, **values)
        )
        return True

    async def set_session_status(
        self, hospital_code: str, session_id: str, status: SessionStatus, *, reason: str | None, now: datetime
    ) -> None:
        await self._c.execute(
            clinic_sessions.update()
            .where(clinic_sessions.c.hospital_code == hospital_code, clinic_sessions.c.id == session_id)
            .values(status=status.value, stop_reason=reason, synced_at=now)
        )

    async def stored_slots(
        self, hospital_code: str, session_id: str, *, for_update: bool = False
    ) -> Sequence[StoredSlot]:
        query = (
            sa.select(clinic_slots)
            .where(clinic_slots.c.hospital_code == hospital_code, clinic_slots.c.session_id == session_id)
            .order_by(clinic_slots.c.start_at)
        )
        if for_update:
            query = query.with_for_update()
        return [
            StoredSlot(
                slot_id=r["id"],
                session_id=r["session_id"],
                capacity=r["capacity"],
                taken=r["taken"],
                his_booked=r["his_booked"],
                start=r["start_at"],
                end=r["end_at"],
            )
            for r in (await self._c.execute(query)).mappings()
        ]

    async def registered_at_his(self, hospital_code: str, session_id: str) -> Mapping[str, int]:
        from persistence.booking.tables import bookings

        b = bookings.c
        rows = await self._c.execute(
            sa.select(b.slot_id, sa.func.count())
            .where(
                b.hospital_code == hospital_code,
                b.session_id == session_id,
                b.state.in_(("confirmed", "checked_in", "completed", "no_show")),
            )
            .group_by(b.slot_id)
        )
        return {str(slot_id): int(n) for slot_id, n in rows}

    async def insert_slot(self, slot: Slot, *, now: datetime) -> None:
        await self._c.execute(
            clinic_slots.insert().values(
                hospital_code=slot.hospital_code,
                id=slot.id,
                session_id=slot.session_id,
                start_at=slot.start,
                end_at=slot.end,
                capacity=slot.capacity,
                taken=0,
                his_booked=slot.his_booked,
                synced_at=now,
            )
        )

    async def update_slot(
        self,
        hospital_code: str,
        slot_id: str,
        *,
        capacity: int,
        his_booked: int,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> None:
        await self._c.execute(
            clinic_slots.update()
            .where(clinic_slots.c.hospital_code == hospital_code, clinic_slots.c.id == slot_id)
            .values(capacity=capacity, his_booked=his_booked, start_at=start, end_at=end, synced_at=now)
        )

    async def add_conflict(
        self, hospital_code: str, session_id: str, slot_id: str, *, his_capacity: int, our_taken: int, now: datetime
    ) -> bool:
        open_one = await self._c.scalar(
            sa.select(capacity_conflicts.c.id).where(
                capacity_conflicts.c.hospital_code == hospital_code,
                capacity_conflicts.c.slot_id == slot_id,
                capacity_conflicts.c.resolved_at.is_(None),
            )
        )
        if open_one is not None:
            await self._c.execute(
                capacity_conflicts.update()
                .where(capacity_conflicts.c.id == open_one)
                .values(his_capacity=his_capacity, our_taken=our_taken)
            )
            return False
        await self._c.execute(
            capacity_conflicts.insert().values(
                hospital_code=hospital_code,
                session_id=session_id,
                slot_id=slot_id,
                his_capacity=his_capacity,
                our_taken=our_taken,
                detected_at=now,
            )
        )
        return True

    @staticmethod
    def _conflict(r: RowMapping) -> CapacityConflict:
        return CapacityConflict(
            id=r["id"],
            hospital_code=r["hospital_code"],
            session_id=r["session_id"],
            slot_id=r["slot_id"],
            his_capacity=r["his_capacity"],
            our_taken=r["our_taken"],
            detected_at=r["detected_at"],
            resolved_at=r["resolved_at"],
            resolution=r["resolution"],
        )

    async def conflicts(self, *, open_only: bool, after: int | None, limit: int) -> Sequence[CapacityConflict]:
        query = sa.select(capacity_conflicts).order_by(capacity_conflicts.c.id).limit(limit)
        if open_only:
            query = query.where(capacity_conflicts.c.resolved_at.is_(None))
        if after is not None:
            query = query.where(capacity_conflicts.c.id > after)
        return [self._conflict(r) for r in (await self._c.execute(query)).mappings()]

    async def resolve_conflict(self, conflict_id: int, *, resolution: str, now: datetime) -> CapacityConflict | None:
        result = await self._c.execute(
            capacity_conflicts.update()
            .where(capacity_conflicts.c.id == conflict_id, capacity_conflicts.c.resolved_at.is_(None))
            .values(resolved_at=now, resolution=resolution)
        )
        if not result.rowcount:
            return None
        row = (
            (await self._c.execute(sa.select(capacity_conflicts).where(capacity_conflicts.c.id == conflict_id)))
            .mappings()
            .one()
        )
        return self._conflict(row)

    async def sync_cursor(self, hospital_code: str) -> datetime | None:
        value = await self._c.scalar(
            sa.select(catalogue_sync_state.c.cursor).where(catalogue_sync_state.c.hospital_code == hospital_code)
        )
        return value if isinstance(value, datetime) else None

    async def set_sync_cursor(self, hospital_code: str, cursor: datetime, *, error: str | None) -> None:
        updated = await self._c.execute(
            catalogue_sync_state.update()
            .where(catalogue_sync_state.c.hospital_code == hospital_code)
            .values(cursor=cursor, last_error=error)
        )
        if not updated.rowcount:
            await self._c.execute(
                catalogue_sync_state.insert().values(hospital_code=hospital_code, cursor=cursor, last_error=error)
            )

    # reads -------------------------------------------------------------------

    async def departments(self, hospital_code: str) -> Sequence[Department]:
        rows = (
            await self._c.execute(
                sa.select(departments).where(departments.c.hospital_code == hospital_code).order_by(departments.c.code)
            )
        ).mappings()
        return [Department(r["hospital_code"], r["code"], r["name"], r["parent_code"], r["description"]) for r in rows]

    @staticmethod
    def _doctor(r: RowMapping) -> Doctor:
        return Doctor(
            hospital_code=r["hospital_code"],
            code=r["code"],
            name=r["name"],
            title=DoctorTitle(r["title"]),
            department_codes=tuple(r["department_codes"] or ()),
            specialties=tuple(r["specialties"] or ()),
            introduction=r["introduction"],
            on_leave=r["on_leave"],
        )

    async def doctors(
        self,
        *,
        hospital_code: str | None,
        department_code: str | None,
        query: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[Doctor]:
        stmt = sa.select(doctors).order_by(doctors.c.hospital_code, doctors.c.code)
        if hospital_code:
            stmt = stmt.where(doctors.c.hospital_code == hospital_code)
        if query:
            stmt = stmt.where(doctors.c.search_text.contains(query.strip().lower(), autoescape=True))
        if after:
            hospital_after, _, code_after = after.partition("/")
            stmt = stmt.where(
                sa.tuple_(doctors.c.hospital_code, doctors.c.code) > sa.tuple_(hospital_after, code_after)
            )
        rows = [self._doctor(r) for r in (await self._c.execute(stmt)).mappings()]
        if department_code:  # department lists are JSON: filter here (portable across dialects)
            rows = [d for d in rows if department_code in d.department_codes]
        return rows[:limit]

    async def doctor(self, hospital_code: str, code: str) -> Doctor | None:
        row = (
            (
                await self._c.execute(
                    sa.select(doctors).where(doctors.c.hospital_code == hospital_code, doctors.c.code == code)
                )
            )
            .mappings()
            .first()
        )
        return self._doctor(row) if row else None

    async def session_views(
        self,
        hospital_code: str,
        *,
        doctor_code: str | None,
        department_code: str | None,
        first_day: date,
        last_day: date,
    ) -> Sequence[SessionView]:
        stmt = (
            sa.select(clinic_sessions)
            .where(
                clinic_sessions.c.hospital_code == hospital_code,
                clinic_sessions.c.day >= first_day,
                clinic_sessions.c.day <= last_day,
            )
            .order_by(clinic_sessions.c.day, clinic_sessions.c.period, clinic_sessions.c.id)
        )
        if doctor_code:
            stmt = stmt.where(clinic_sessions.c.doctor_code == doctor_code)
        if department_code:
            stmt = stmt.where(clinic_sessions.c.department_code == department_code)
        sessions = list((await self._c.execute(stmt)).mappings())
        if not sessions:
            return []
        ids = [s["id"] for s in sessions]
        slot_rows = (
            await self._c.execute(
                sa.select(clinic_slots)
                .where(clinic_slots.c.hospital_code == hospital_code, clinic_slots.c.session_id.in_(ids))
                .order_by(clinic_slots.c.start_at)
            )
        ).mappings()
        by_session: dict[str, list[SlotView]] = {}
        for r in slot_rows:
            by_session.setdefault(r["session_id"], []).append(
                SlotView(
                    slot_id=r["id"], start=r["start_at"], end=r["end_at"], capacity=r["capacity"], taken=r["taken"]
                )
            )
        return [
            SessionView(
                hospital_code=hospital_code,
                session_id=s["id"],
                department_code=s["department_code"],
                doctor_code=s["doctor_code"],
                day=s["day"],
                period=Period(s["period"]),
                status=SessionStatus(s["status"]),
                fee_fen=s["fee_fen"],
                slots=tuple(by_session.get(s["id"], [])),
                stop_reason=s["stop_reason"],
            )
            for s in sessions
        ]
