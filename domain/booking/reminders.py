"""Appointment reminders (issue: booking, item 7): the evening before the visit and shortly before it.

A confirmed booking has up to two scheduled messages of the notification service (``domain/notification/
schedule.py``), keyed ``booking:{id}:evening`` and ``booking:{id}:before`` with the booking as their subject. They
are written in the transaction that changes the booking, when the state machine asks for it:
``ScheduleReminders(slot_start)`` on confirmation, a reschedule and a sync's change of time (the rows under the
same keys are rebuilt), ``CancelReminders`` when the booking ends or is checked in (the pending rows are
cancelled). At send time the subject check (``still_confirmed``) skips a reminder whose booking is no longer
CONFIRMED, whatever a lost or reordered write left behind.

When (``ReminderPolicy``, settings ``HSP_BOOKING__REMINDER_EVENING_TIME`` and ``__REMINDER_BEFORE_MINUTES``):

* ``evening``: the day before the visit at 20:00 Beijing time; ``before``: two hours before the slot;
* both are normal-class messages: a moment inside quiet hours (21:00-08:00 by default) is moved before they begin
  (the notification service's ``plan_reminder``: 30 minutes before), so the ``before`` reminder of an 08:30
  visit would go out at 20:30 the evening before. When the evening reminder is there too it is left out: it would
  repeat the evening one half an hour later (and use up one more of the resident's one-time WeChat
  subscriptions);
* a moment already past when the booking is confirmed or moved is not scheduled (and a pending row under its key
  is cancelled): the confirmation itself has just told the resident.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.booking.model import Booking, BookingState
from domain.kernel.clock import SHANGHAI, to_shanghai
from domain.kernel.money import fen_to_yuan
from domain.notification.schedule import ScheduledMessage, ScheduleRepository, SubjectCheck

SUBJECT_TYPE = "booking"
EVENING = "evening"
BEFORE = "before"
TEMPLATES = {EVENING: "booking.reminder_evening", BEFORE: "booking.reminder_soon"}


@dataclass(frozen=True, slots=True)
class ReminderPolicy:
    evening: time = time(20, 0)
    """Asia/Shanghai, the day before the visit."""
    before: timedelta = timedelta(minutes=120)
    """Before the slot starts."""


class ReminderFactory(Protocol):
    """Builds a scheduled message's row (the notification service: values sealed, quiet hours applied)."""

    def reminder(
        self,
        *,
        key: str,
        event_type: str,
        account_id: str,
        subject_type: str,
        subject_id: str,
        values: Mapping[str, str],
        due_at: datetime,
    ) -> ScheduledMessage: ...


def reminder_key(booking_id: str, which: str) -> str:
    return f"booking:{booking_id}:{which}"


def moments(slot_start: datetime, policy: ReminderPolicy) -> dict[str, datetime]:
    """The moments the reminders are meant for, before quiet hours move them."""
    visit_day = to_shanghai(slot_start).date()
    evening = datetime.combine(visit_day - timedelta(days=1), policy.evening, tzinfo=SHANGHAI)
    return {EVENING: evening, BEFORE: slot_start - policy.before}


def reminder_values(booking: Booking, hospital_name: str, slot_start: datetime) -> dict[str, str]:
    """The booking templates' variables (``domain/notification/templates.py``)."""
    return {
        "hospital": hospital_name,
        "time": to_shanghai(slot_start).strftime("%Y-%m-%d %H:%M"),
        "amount": fen_to_yuan(booking.fee_fen) + "元",
        "deadline": "",
    }


def plan(
    factory: ReminderFactory, booking: Booking, hospital_name: str, slot_start: datetime, policy: ReminderPolicy
) -> dict[str, ScheduledMessage]:
    """Both reminders' rows as the notification service would send them (before dropping any)."""
    values = reminder_values(booking, hospital_name, slot_start)
    return {
        which: factory.reminder(
            key=reminder_key(booking.id, which),
            event_type=TEMPLATES[which],
            account_id=booking.account_id,
            subject_type=SUBJECT_TYPE,
            subject_id=booking.id,
            values=values,
            due_at=moment,
        )
        for which, moment in moments(slot_start, policy).items()
    }


def wanted(rows: Mapping[str, ScheduledMessage], slot_start: datetime, *, now: datetime) -> set[str]:
    """Which of the planned reminders to keep: not past, and no ``before`` that only repeats the evening one."""
    keep = {which for which, row in rows.items() if row.due_at > now}
    visit_day = to_shanghai(slot_start).date()
    if EVENING in keep and BEFORE in keep and to_shanghai(rows[BEFORE].due_at).date() < visit_day:
        keep.discard(BEFORE)
    return keep


async def schedule_reminders(
    schedule: ScheduleRepository,
    factory: ReminderFactory,
    booking: Booking,
    *,
    hospital_name: str,
    slot_start: datetime,
    policy: ReminderPolicy,
    now: datetime,
) -> dict[str, datetime]:
    """(Re)build the booking's reminders in the caller's transaction; returns the due times written."""
    rows = plan(factory, booking, hospital_name, slot_start, policy)
    keep = wanted(rows, slot_start, now=now)
    written: dict[str, datetime] = {}
    for which, row in rows.items():
        if which in keep:
            await schedule.upsert(row, now=now)
            written[which] = row.due_at
        else:
            await schedule.cancel(row.key, now=now)
    return written


async def cancel_reminders(schedule: ScheduleRepository, booking_id: str, *, now: datetime) -> int:
    return await schedule.cancel_subject(SUBJECT_TYPE, booking_id, now=now)


class _BookingReader(Protocol):
    async def get(self, booking_id: str, *, lock: bool = False) -> Booking | None: ...


class _ReadingUnitOfWork(Protocol):
    """What the subject check needs of ``BookingUnitOfWork`` (not imported: ``use_cases`` imports this module)."""

    @property
    def bookings(self) -> _BookingReader: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def still_confirmed(uow_factory: Callable[[], _ReadingUnitOfWork]) -> SubjectCheck:
    """The notification service's subject check for ``booking`` reminders: sent only for a CONFIRMED booking."""

    async def check(booking_id: str) -> bool:
        async with uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        return booking is not None and booking.state is BookingState.CONFIRMED

    return check
