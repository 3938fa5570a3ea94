"""The doctor's own schedule (issue: booking item 8): their sessions over a few days, each slot with its bookings.

A doctor is a staff account linked by operators to a practitioner id at each hospital (``PractitionerLink``); a
session is theirs when its ``doctor_code`` is that id. Patients are shown as the doctor needs them at the desk and
no more (SEC-P-08): the name masked (``张*``, ``张*三``), sex and age on the visit day, the booking's state and queue
number; never an ID number, a phone or an account. Unpaid and failed bookings (a hold, an expired hold, a refused
confirmation, a late payment refunded) were never patients of the session and are left out. Every read is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol, cast

from domain.booking.model import Booking, BookingState
from domain.booking.use_cases import BookingService, BookingUnitOfWork
from domain.catalogue.model import Period, SessionStatus, SessionView
from domain.identity.masking import mask_name
from domain.kernel.audit import AuditEvent, Outcome
from domain.kernel.clock import to_shanghai
from domain.kernel.errors import ValidationError
from domain.patient.model import Person
from domain.patient.ports import PatientRepository

MAX_DAYS = 31
"""The longest range one request reads."""
DEFAULT_DAYS = 14
_PERIODS = list(Period)

_NEVER_SEEN = frozenset(
    {BookingState.HELD, BookingState.EXPIRED, BookingState.CONFIRM_FAILED, BookingState.REFUNDED_LATE}
)


class ScheduleRangeError(ValidationError):
    code = "booking.schedule_range_invalid"
    message = "查询日期范围有误：结束日期不能早于开始日期，且跨度不超过31天"


@dataclass(frozen=True, slots=True)
class ScheduledPatient:
    booking_id: str
    state: BookingState
    patient_name: str
    """Masked (``张*``)."""
    sex: str
    age: int | None
    queue_number: int | None


@dataclass(frozen=True, slots=True)
class ScheduleSlot:
    slot_id: str
    start: datetime
    end: datetime
    capacity: int
    taken: int
    patients: tuple[ScheduledPatient, ...]


@dataclass(frozen=True, slots=True)
class DoctorSession:
    hospital_code: str
    session_id: str
    department_code: str
    day: date
    period: Period
    status: SessionStatus
    stop_reason: str | None
    fee_fen: int
    slots: tuple[ScheduleSlot, ...]


class _ScheduleUnitOfWork(BookingUnitOfWork, Protocol):
    @property
    def patients(self) -> PatientRepository: ...


def date_range(first: date | None, last: date | None, *, today: date) -> tuple[date, date]:
    """``first``..``last`` (inclusive): today and the next 13 days by default; at most ``MAX_DAYS`` days."""
    start = first or today
    try:
        end = last or start + timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # from=9999-12-31
        raise ScheduleRangeError(f"no default end after {start}") from None
    if end < start or (end - start).days >= MAX_DAYS:
        raise ScheduleRangeError(f"bad range {start}..{end}")
    return start, end


def _shown(booking: Booking) -> bool:
    """A booking the doctor sees: it holds or held a paid (or free) number of the session."""
    if booking.state in _NEVER_SEEN:
        return False
    if booking.state in (BookingState.CANCELLED, BookingState.STOPPED):
        return booking.paid or booking.fee_fen == 0  # not an unpaid hold that ended
    return True


def _patient(booking: Booking, person: Person | None, day: date) -> ScheduledPatient:
    return ScheduledPatient(
        booking_id=booking.id,
        state=booking.state,
        patient_name=mask_name(person.name) if person else "*",
        sex=person.sex if person else "",
        age=person.age_on(day) if person else None,
        queue_number=booking.queue_number,
    )


async def doctor_schedule(
    service: BookingService,
    *,
    staff_account_id: str,
    links: Mapping[str, str],
    first: date | None,
    last: date | None,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> tuple[date, date, list[DoctorSession]]:
    """The sessions of the practitioners ``links`` names (hospital code -> practitioner id) on ``first``..``last``
    (Beijing dates), with their slots and patients, by day. The read is audited."""
    now = service.d.clock.now()
    start, end = date_range(first, last, today=to_shanghai(now).date())
    factory = cast(Callable[[], _ScheduleUnitOfWork], service.d.uow_factory)
    found: list[DoctorSession] = []
    booked = 0
    async with factory() as uow:
        for hospital_code, practitioner_id in sorted(links.items()):
            views = await uow.catalogue.session_views(
                hospital_code, doctor_code=practitioner_id, department_code=None, first_day=start, last_day=end
            )
            if not views:
                continue
            shown: dict[str, list[Booking]] = {}
            people: dict[str, Person | None] = {}
            for booking in await uow.bookings.of_sessions(hospital_code, [v.session_id for v in views]):
                if not _shown(booking):
                    continue
                shown.setdefault(booking.session_id, []).append(booking)
                if booking.person_id not in people:
                    people[booking.person_id] = await uow.patients.resolve(booking.person_id)
            for view in views:
                session = _session(view, shown.get(view.session_id, []), people)
                booked += sum(len(s.patients) for s in session.slots)
                found.append(session)
        await uow.audit.record(
            AuditEvent(
                action="booking.doctor_schedule_read",
                outcome=Outcome.SUCCESS,
                actor=f"staff:{staff_account_id}",
                actor_role="doctor",
                object_type="practitioner",
                object_id=",".join(f"{h}/{p}" for h, p in sorted(links.items()))[:128] or None,
                request_id=request_id,
                source_ip=source_ip,
                details={
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "sessions": str(len(found)),
                    "patients": str(booked),
                },
            ),
            now=now,
        )
        await uow.commit()
    found.sort(key=lambda s: (s.day, _PERIODS.index(s.period), s.hospital_code, s.session_id))
    return start, end, found


def _session(view: SessionView, bookings: Sequence[Booking], people: Mapping[str, Person | None]) -> DoctorSession:
    by_slot: dict[str, list[ScheduledPatient]] = {}
    for booking in bookings:
        by_slot.setdefault(booking.slot_id, []).append(_patient(booking, people.get(booking.person_id), view.day))
    return DoctorSession(
        hospital_code=view.hospital_code,
        session_id=view.session_id,
        department_code=view.department_code,
        day=view.day,
        period=view.period,
        status=view.status,
        stop_reason=view.stop_reason,
        fee_fen=view.fee_fen,
        slots=tuple(
            ScheduleSlot(
                slot_id=slot.slot_id,
                start=slot.start,
                end=slot.end,
                capacity=slot.capacity,
                taken=slot.taken,
                patients=tuple(by_slot.get(slot.slot_id, ())),
            )
            for slot in view.slots
        ),
    )
