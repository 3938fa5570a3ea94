"""Bookings and the slot counts they hold, with SQLAlchemy Core.

Taking a number is one conditional ``UPDATE clinic_slots SET taken = taken + 1 WHERE ... AND taken < capacity``:
under any concurrency at most ``capacity`` succeed (the row lock serialises them, the condition is re-checked on
the latest row). A person's bookings are read under a lock on the person's row, so that two holds for one person
cannot both pass a limit (DESIGN §3.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.booking.model import BanLift, Booking, BookingState, Deadlines
from domain.booking.slots import SlotOffer, SlotStock
from domain.catalogue.model import SessionStatus
from domain.kernel.errors import ConflictError
from persistence.booking.tables import booking_ban_lifts, bookings
from persistence.catalogue.tables import clinic_sessions, clinic_slots
from persistence.patient.tables import persons


class ConcurrentBookingChangeError(ConflictError):
    code = "booking.concurrent_change"
    message = "预约状态已变化，请刷新后重试"


class LiveBookingExistsError(ConflictError):
    """The unique index of live bookings per person, hospital, department and day (APT-005)."""

    code = "booking.limit_department_day"
    message = "同一就诊人同一天在同一医院同一科室只能预约一次"


def _booking(row: RowMapping) -> Booking:
    return Booking(
        id=row["id"],
        account_id=row["account_id"],
        person_id=row["person_id"],
        hospital_code=row["hospital_code"],
        department_code=row["department_code"],
        doctor_code=row["doctor_code"],
        session_id=row["session_id"],
        slot_id=row["slot_id"],
        slot_start=row["slot_start"],
        slot_end=row["slot_end"],
        fee_fen=row["fee_fen"],
        created_at=row["created_at"],
        deadlines=Deadlines(
            hold_expires_at=row["hold_expires_at"],
            cancel_deadline=row["cancel_deadline"],
            checkin_opens_at=row["checkin_opens_at"],
            checkin_closes_at=row["checkin_closes_at"],
        ),
        state=BookingState(row["state"]),
        payment_order_id=row["payment_order_id"],
        paid_at=row["paid_at"],
        refund_reason=row["refund_reason"],
        his_lock_id=row["his_lock_id"],
        his_registration_id=row["his_registration_id"],
        queue_number=row["queue_number"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        reschedules=row["reschedules"],
        version=row["version"],
    )


def _values(booking: Booking) -> dict[str, object]:
    return {
        "hospital_code": booking.hospital_code,
        "department_code": booking.department_code,
        "doctor_code": booking.doctor_code,
        "session_id": booking.session_id,
        "slot_id": booking.slot_id,
        "slot_start": booking.slot_start,
        "slot_end": booking.slot_end,
        "visit_day": booking.visit_day,
        "fee_fen": booking.fee_fen,
        "hold_expires_at": booking.deadlines.hold_expires_at,
        "cancel_deadline": booking.deadlines.cancel_deadline,
        "checkin_opens_at": booking.deadlines.checkin_opens_at,
        "checkin_closes_at": booking.deadlines.checkin_closes_at,
        "state": booking.state.value,
        "payment_order_id": booking.payment_order_id,
        "paid_at": booking.paid_at,
        "refund_reason": booking.refund_reason,
        "his_lock_id": booking.his_lock_id,
        "his_registration_id": booking.his_registration_id,
        "queue_number": booking.queue_number,
        "ended_at": booking.ended_at,
        "end_reason": booking.end_reason,
        "reschedules": booking.reschedules,
        "version": booking.version,
    }


class SqlBookingRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # --- bookings ------------------------------------------------------------------------------------------------

    async def add(self, booking: Booking, *, now: datetime) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    bookings.insert().values(
                        id=booking.id,
                        account_id=booking.account_id,
                        person_id=booking.person_id,
                        created_at=booking.created_at,
                        updated_at=now,
                        **_values(booking),
                    )
                )
        except IntegrityError as exc:
            if "ux_bookings_live_person_department_day" in str(exc.orig):
                raise LiveBookingExistsError("a live booking of this person there that day") from None
            raise

    async def get(self, booking_id: str, *, lock: bool = False) -> Booking | None:
        query = sa.select(bookings).where(bookings.c.id == booking_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _booking(row)

    async def by_payment_order(self, order_id: str, *, lock: bool = False) -> Booking | None:
        query = sa.select(bookings).where(bookings.c.payment_order_id == order_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _booking(row)

    async def save(self, before: Booking, after: Booking, *, now: datetime) -> None:
        if after.version == before.version:
            return
        values = _values(after)
        try:
            async with self._conn.begin_nested():
                result = await self._conn.execute(
                    bookings.update()
                    .where(bookings.c.id == after.id, bookings.c.version == before.version)
                    .values(updated_at=now, **values)
                )
        except IntegrityError as exc:
            if "ux_bookings_live_person_department_day" in str(exc.orig):
                raise LiveBookingExistsError("a live booking of this person there that day") from None
            raise
        if result.rowcount != 1:
            raise ConcurrentBookingChangeError(f"booking {after.id} changed concurrently")

    async def of_person(self, person_id: str, *, since: datetime) -> Sequence[Booking]:
        """Every booking of the person with a visit from ``since`` on (limits look back three months, bans a
        year at most)."""
        rows = await self._conn.execute(
            sa.select(bookings)
            .where(bookings.c.person_id == person_id, bookings.c.slot_start >= since)
            .order_by(bookings.c.slot_start)
        )
        return [_booking(r) for r in rows.mappings()]

    async def of_persons(self, person_ids: Sequence[str], *, limit: int) -> Sequence[Booking]:
        if not person_ids:
            return []
        rows = await self._conn.execute(
            sa.select(bookings)
            .where(bookings.c.person_id.in_(list(person_ids)))
            .order_by(bookings.c.slot_start.desc())
            .limit(limit)
        )
        return [_booking(r) for r in rows.mappings()]

    async def of_sessions(self, hospital_code: str, session_ids: Sequence[str]) -> Sequence[Booking]:
        """Every booking of these sessions, by slot time (index ``ix_bookings_session``)."""
        if not session_ids:
            return []
        rows = await self._conn.execute(
            sa.select(bookings)
            .where(bookings.c.hospital_code == hospital_code, bookings.c.session_id.in_(list(session_ids)))
            .order_by(bookings.c.slot_start, bookings.c.created_at, bookings.c.id)
        )
        return [_booking(r) for r in rows.mappings()]

    async def due_for_expiry(self, *, now: datetime, limit: int) -> Sequence[str]:
        rows = await self._conn.execute(
            sa.select(bookings.c.id)
            .where(bookings.c.state == BookingState.HELD.value, bookings.c.hold_expires_at <= now)
            .order_by(bookings.c.hold_expires_at)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    async def awaiting_confirmation(self, *, older_than: datetime, limit: int) -> Sequence[str]:
        """Paid bookings not confirmed at the HIS for a while (a lost message, a HIS that was down)."""
        rows = await self._conn.execute(
            sa.select(bookings.c.id)
            .where(bookings.c.state == BookingState.PAID.value, bookings.c.updated_at <= older_than)
            .order_by(bookings.c.updated_at)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    # --- persons and slots ---------------------------------------------------------------------------------------

    async def lock_person(self, person_id: str) -> bool:
        """Serialise the bookings of one person (their limits span every account and hospital)."""
        row = await self._conn.execute(sa.select(persons.c.id).where(persons.c.id == person_id).with_for_update())
        return row.first() is not None

    async def offer(self, hospital_code: str, slot_id: str) -> SlotOffer | None:
        s, c = clinic_slots.c, clinic_sessions.c
        row = (
            (
                await self._conn.execute(
                    sa.select(
                        s.id,
                        s.session_id,
                        s.start_at,
                        s.end_at,
                        s.capacity,
                        s.taken,
                        c.department_code,
                        c.doctor_code,
                        c.fee_fen,
                        c.status,
                    )
                    .select_from(
                        clinic_slots.join(
                            clinic_sessions,
                            sa.and_(c.hospital_code == s.hospital_code, c.id == s.session_id),
                        )
                    )
                    .where(s.hospital_code == hospital_code, s.id == slot_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return SlotOffer(
            hospital_code=hospital_code,
            session_id=row["session_id"],
            slot_id=row["id"],
            department_code=row["department_code"],
            doctor_code=row["doctor_code"],
            start=row["start_at"],
            end=row["end_at"],
            fee_fen=row["fee_fen"],
            session_status=SessionStatus(row["status"]),
            stock=SlotStock(hospital_code, row["id"], capacity=row["capacity"], taken=row["taken"]),
        )

    async def take(self, hospital_code: str, slot_id: str) -> bool:
        """One number of the slot, if one is left."""
        s = clinic_slots.c
        result = await self._conn.execute(
            clinic_slots.update()
            .where(s.hospital_code == hospital_code, s.id == slot_id, s.taken < s.capacity)
            .values(taken=s.taken + 1)
        )
        return result.rowcount == 1

    async def release(self, hospital_code: str, slot_id: str) -> bool:
        s = clinic_slots.c
        result = await self._conn.execute(
            clinic_slots.update()
            .where(s.hospital_code == hospital_code, s.id == slot_id, s.taken > 0)
            .values(taken=s.taken - 1)
        )
        return result.rowcount == 1

    # --- rescheduling, arrival, no-shows and bans (domain/booking/visits.py) --------------------------------------

    async def lock_slots(self, hospital_code: str, slot_ids: Sequence[str]) -> None:
        """Lock the slots' rows in id order, so that two reschedules in opposite directions cannot deadlock."""
        s = clinic_slots.c
        await self._conn.execute(
            sa.select(s.id)
            .where(s.hospital_code == hospital_code, s.id.in_(sorted(set(slot_ids))))
            .order_by(s.id)
            .with_for_update()
        )

    async def past_check_in(self, *, now: datetime, limit: int) -> Sequence[str]:
        """Confirmed bookings whose check-in window closed before ``now``: the no-shows to mark (APT-007)."""
        rows = await self._conn.execute(
            sa.select(bookings.c.id)
            .where(bookings.c.state == BookingState.CONFIRMED.value, bookings.c.checkin_closes_at < now)
            .order_by(bookings.c.checkin_closes_at, bookings.c.id)
            .limit(limit)
        )
        return [str(r) for r in rows.scalars()]

    async def add_ban_lift(self, lift: BanLift) -> None:
        await self._conn.execute(
            booking_ban_lifts.insert().values(
                id=lift.id,
                person_id=lift.person_id,
                covers_until=lift.covers_until,
                lifted_at=lift.lifted_at,
                actor=lift.actor,
                reason=lift.reason,
            )
        )

    async def ban_lifts(self, person_id: str) -> Sequence[BanLift]:
        t = booking_ban_lifts.c
        rows = await self._conn.execute(
            sa.select(booking_ban_lifts)
            .where(t.person_id == person_id)
            .order_by(t.covers_until.desc(), t.lifted_at.desc())
        )
        return [
            BanLift(r["id"], r["person_id"], r["covers_until"], r["lifted_at"], r["actor"], r["reason"])
            for r in rows.mappings()
        ]

    async def ban_forgiven_until(self, person_id: str) -> datetime | None:
        t = booking_ban_lifts.c
        value = await self._conn.execute(sa.select(sa.func.max(t.covers_until)).where(t.person_id == person_id))
        found: datetime | None = value.scalar_one_or_none()
        return found
