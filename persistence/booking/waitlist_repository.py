"""The waitlist's storage (domain/booking/waitlist_service.py), with SQLAlchemy Core.

Claiming the next entry in line uses ``FOR UPDATE SKIP LOCKED`` on that one entry: two numbers offered at the same
time go to the first two persons in line, never both to the first. Slot counts are changed only by the booking
repository's conditional updates (``take``/``release``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.booking.slots import SlotStock
from domain.booking.waitlist import (
    SESSION_OVER,
    SESSION_STOPPED,
    AlreadyWaitingError,
    HeldNumber,
    WaitedSession,
    WaitedSlot,
    WaitlistEntry,
    WaitlistState,
)
from domain.catalogue.model import SessionStatus
from domain.kernel.errors import ConflictError
from persistence.booking.waitlist_tables import waitlist_entries, waitlist_numbers
from persistence.catalogue.tables import clinic_sessions, clinic_slots
from persistence.notification.tables import notification_deliveries

w = waitlist_entries.c
_LIVE = (WaitlistState.WAITING.value, WaitlistState.OFFERED.value)


class ConcurrentWaitlistChangeError(ConflictError):
    code = "waitlist.concurrent_change"
    message = "候补状态已变化，请刷新后重试"


def _entry(row: RowMapping) -> WaitlistEntry:
    return WaitlistEntry(
        id=row["id"],
        account_id=row["account_id"],
        person_id=row["person_id"],
        patient_id=row["patient_id"],
        hospital_code=row["hospital_code"],
        department_code=row["department_code"],
        session_id=row["session_id"],
        visit_day=row["visit_day"],
        created_at=row["created_at"],
        state=WaitlistState(row["state"]),
        slot_id=row["slot_id"],
        slot_start=row["slot_start"],
        offered_at=row["offered_at"],
        delivered_at=row["delivered_at"],
        offer_expires_at=row["offer_expires_at"],
        notice_id=row["notice_id"],
        booking_id=row["booking_id"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        version=row["version"],
    )


def _values(entry: WaitlistEntry) -> dict[str, object]:
    return {
        "state": entry.state.value,
        "slot_id": entry.slot_id,
        "slot_start": entry.slot_start,
        "offered_at": entry.offered_at,
        "delivered_at": entry.delivered_at,
        "offer_expires_at": entry.offer_expires_at,
        "notice_id": entry.notice_id,
        "booking_id": entry.booking_id,
        "ended_at": entry.ended_at,
        "end_reason": entry.end_reason,
        "version": entry.version,
    }


class SqlWaitlistRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # --- entries -------------------------------------------------------------------------------------------------

    async def add(self, entry: WaitlistEntry, *, now: datetime) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    waitlist_entries.insert().values(
                        id=entry.id,
                        account_id=entry.account_id,
                        person_id=entry.person_id,
                        patient_id=entry.patient_id,
                        hospital_code=entry.hospital_code,
                        department_code=entry.department_code,
                        session_id=entry.session_id,
                        visit_day=entry.visit_day,
                        created_at=entry.created_at,
                        updated_at=now,
                        **_values(entry),
                    )
                )
        except IntegrityError as exc:
            text = str(exc.orig)
            if "ux_waitlist_entries_live_person_session" in text or "waitlist_entries.person_id" in text:  # PG, SQLite
                raise AlreadyWaitingError("a live entry of this person for this session") from None
            raise

    async def get(self, entry_id: str, *, lock: bool = False) -> WaitlistEntry | None:
        query = sa.select(waitlist_entries).where(w.id == entry_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _entry(row)

    async def save(self, before: WaitlistEntry, after: WaitlistEntry, *, now: datetime) -> None:
        if after.version == before.version and after == before:
            return
        result = await self._conn.execute(
            waitlist_entries.update()
            .where(w.id == after.id, w.version == before.version)
            .values(updated_at=now, **_values(after))
        )
        if result.rowcount != 1:
            raise ConcurrentWaitlistChangeError(f"entry {after.id} changed concurrently")

    async def of_account(self, account_id: str, *, limit: int) -> Sequence[WaitlistEntry]:
        rows = await self._conn.execute(
            sa.select(waitlist_entries)
            .where(w.account_id == account_id)
            .order_by(w.created_at.desc(), w.id.desc())
            .limit(limit)
        )
        return [_entry(r) for r in rows.mappings()]

    async def ahead(self, entry: WaitlistEntry) -> int:
        value = await self._conn.scalar(
            sa.select(sa.func.count())
            .select_from(waitlist_entries)
            .where(
                w.hospital_code == entry.hospital_code,
                w.session_id == entry.session_id,
                w.state == WaitlistState.WAITING.value,
                sa.or_(w.created_at < entry.created_at, sa.and_(w.created_at == entry.created_at, w.id < entry.id)),
            )
        )
        return int(value or 0)

    async def live_of_person(self, person_id: str) -> Sequence[WaitlistEntry]:
        rows = await self._conn.execute(
            sa.select(waitlist_entries).where(w.person_id == person_id, w.state.in_(_LIVE)).order_by(w.created_at)
        )
        return [_entry(r) for r in rows.mappings()]

    async def live_in_session(self, hospital_code: str, session_id: str) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(w.id)
            .where(w.hospital_code == hospital_code, w.session_id == session_id, w.state.in_(_LIVE))
            .order_by(w.created_at, w.id)
        )
        return [str(r) for r in rows.scalars()]

    async def waiting(self, hospital_code: str, session_id: str, *, limit: int) -> Sequence[WaitlistEntry]:
        rows = await self._conn.execute(
            sa.select(waitlist_entries)
            .where(w.hospital_code == hospital_code, w.session_id == session_id, w.state == WaitlistState.WAITING.value)
            .order_by(w.created_at, w.id)
            .limit(limit)
        )
        return [_entry(r) for r in rows.mappings()]

    async def claim_waiting(self, entry_id: str) -> WaitlistEntry | None:
        row = (
            (
                await self._conn.execute(
                    sa.select(waitlist_entries)
                    .where(w.id == entry_id, w.state == WaitlistState.WAITING.value)
                    .with_for_update(skip_locked=True)
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else _entry(row)

    async def by_notice(self, notice_id: str) -> WaitlistEntry | None:
        row = (await self._conn.execute(sa.select(waitlist_entries).where(w.notice_id == notice_id))).mappings().first()
        return None if row is None else _entry(row)

    # --- sessions and slots --------------------------------------------------------------------------------------

    async def session(self, hospital_code: str, session_id: str) -> WaitedSession | None:
        c, s = clinic_sessions.c, clinic_slots.c
        row = (
            (
                await self._conn.execute(
                    sa.select(clinic_sessions).where(c.hospital_code == hospital_code, c.id == session_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        slots = await self._conn.execute(
            sa.select(s.id, s.capacity, s.taken, s.start_at)
            .where(s.hospital_code == hospital_code, s.session_id == session_id)
            .order_by(s.start_at)
        )
        return WaitedSession(
            hospital_code=hospital_code,
            session_id=session_id,
            department_code=row["department_code"],
            day=row["day"],
            status=SessionStatus(row["status"]),
            slots=tuple(
                WaitedSlot(SlotStock(hospital_code, slot_id, capacity, taken), start)
                for slot_id, capacity, taken, start in slots
            ),
        )

    async def waiting_session_of_slot(self, hospital_code: str, slot_id: str) -> str | None:
        s = clinic_slots.c
        someone = (
            sa.select(sa.literal(1))
            .where(
                w.hospital_code == s.hospital_code, w.session_id == s.session_id, w.state == WaitlistState.WAITING.value
            )
            .exists()
        )
        value = await self._conn.scalar(
            sa.select(s.session_id).where(s.hospital_code == hospital_code, s.id == slot_id, someone)
        )
        return None if value is None else str(value)

    async def free_waited_slots(self, *, now: datetime, limit: int) -> Sequence[tuple[str, str, str]]:
        s, c = clinic_slots.c, clinic_sessions.c
        someone = (
            sa.select(sa.literal(1))
            .where(
                w.hospital_code == s.hospital_code, w.session_id == s.session_id, w.state == WaitlistState.WAITING.value
            )
            .exists()
        )
        rows = await self._conn.execute(
            sa.select(s.hospital_code, s.session_id, s.id)
            .select_from(
                clinic_slots.join(clinic_sessions, sa.and_(c.hospital_code == s.hospital_code, c.id == s.session_id))
            )
            .where(c.status == SessionStatus.OPEN.value, s.start_at > now, s.taken < s.capacity, someone)
            .order_by(s.start_at)
            .limit(limit)
        )
        return [(str(h), str(session), str(slot)) for h, session, slot in rows]

    async def closed_entries(self, *, today: date, limit: int) -> Sequence[tuple[str, str]]:
        c = clinic_sessions.c
        rows = await self._conn.execute(
            sa.select(w.id, c.status)
            .select_from(
                waitlist_entries.outerjoin(
                    clinic_sessions, sa.and_(c.hospital_code == w.hospital_code, c.id == w.session_id)
                )
            )
            .where(
                w.state.in_(_LIVE),
                sa.or_(c.id.is_(None), c.status != SessionStatus.OPEN.value, c.day < today),
            )
            .limit(limit)
        )
        return [
            (str(entry_id), SESSION_STOPPED if status == SessionStatus.STOPPED.value else SESSION_OVER)
            for entry_id, status in rows
        ]

    # --- offers --------------------------------------------------------------------------------------------------

    async def offers_due(self, *, now: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(w.id)
            .where(w.state == WaitlistState.OFFERED.value, w.offer_expires_at <= now)
            .order_by(w.offer_expires_at)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    async def delivered_offers(self, event_type: str, *, limit: int) -> Sequence[tuple[str, datetime]]:
        d = notification_deliveries.c
        rows = await self._conn.execute(
            sa.select(w.id, sa.func.min(d.sent_at))
            .select_from(waitlist_entries.join(notification_deliveries, d.event_id == w.notice_id))
            .where(
                w.state == WaitlistState.OFFERED.value,
                w.delivered_at.is_(None),
                d.event_type == event_type,
                d.state == "sent",
                d.sent_at.is_not(None),
            )
            .group_by(w.id)
            .limit(limit)
        )
        return [(str(entry_id), sent_at) for entry_id, sent_at in rows if sent_at is not None]

    async def delivery(self, delivery_id: int) -> tuple[str, str, datetime | None] | None:
        d = notification_deliveries.c
        row = (
            await self._conn.execute(
                sa.select(d.event_id, d.event_type, d.sent_at).where(d.id == delivery_id, d.state == "sent")
            )
        ).first()
        return None if row is None else (str(row[0]), str(row[1]), row[2])

    # --- numbers held for a line ---------------------------------------------------------------------------------

    async def add_number(self, number: HeldNumber) -> None:
        await self._conn.execute(
            waitlist_numbers.insert().values(
                id=number.id,
                hospital_code=number.hospital_code,
                session_id=number.session_id,
                slot_id=number.slot_id,
                created_at=number.created_at,
                reason=number.reason,
            )
        )

    async def take_number(self, number_id: str) -> HeldNumber | None:
        n = waitlist_numbers.c
        row = (
            (await self._conn.execute(sa.select(waitlist_numbers).where(n.id == number_id).with_for_update()))
            .mappings()
            .first()
        )
        if row is None:
            return None
        await self._conn.execute(waitlist_numbers.delete().where(n.id == number_id))
        return HeldNumber(
            id=row["id"],
            hospital_code=row["hospital_code"],
            session_id=row["session_id"],
            slot_id=row["slot_id"],
            created_at=row["created_at"],
            reason=row["reason"],
        )

    async def pending_numbers(self, *, older_than: datetime, limit: int) -> Sequence[str]:
        n = waitlist_numbers.c
        rows = await self._conn.execute(
            sa.select(n.id).where(n.created_at <= older_than).order_by(n.created_at).limit(limit)
        )
        return [str(r) for r in rows.scalars()]
