"""Booking a slot, exactly as DESIGN §3 describes it (issue: booking).

``hold`` is the hot path of the morning release: the Redis gate answers "sold out" for empty slots without a
database round trip; otherwise one transaction locks the person (limits are per person across hospitals,
APT-005), reads the person's bookings and the slot, runs the pure checks and the state machine, takes the number
with a conditional update, creates the payment order and the booking, writes the outbox, and commits. A unique
index over live bookings per person, hospital, department and day backs the first limit in the database.

Everything outside the database happens after the commit through the outbox (``booking.*`` topics handled by the
worker): confirming at the HIS (idempotent key: the booking id), closing payment orders, refunds (idempotent keys
per reason), card-use reports and the residents' messages. Payment outcomes arrive as the payment service's
``payment.*`` messages. Sweeps finish what a crash or an outage left: holds past their deadline expire (the
order is closed at its channel first), paid bookings not yet confirmed are confirmed again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from domain.booking.errors import SlotFullError
from domain.booking.gate import SlotGate, slot_key
from domain.booking.machine import (
    CancelAtHis,
    CancelReminders,
    CancelRequested,
    CheckInAtHis,
    ClosePaymentOrder,
    ConfirmAtHis,
    CreatePaymentOrder,
    Effect,
    Event,
    HisConfirmed,
    HisRefused,
    Hold,
    HoldExpired,
    KeepLatePayment,
    LockAtHis,
    LockedAtHis,
    MoveAtHis,
    Notify,
    Paid,
    PaidLate,
    ReleaseSlot,
    ReportCardUse,
    RequestRefund,
    ScheduleReminders,
    TakeSlot,
    UnlockAtHis,
    apply,
    hold,
)
from domain.booking.model import BanLift, Booking, BookingState
from domain.booking.reminders import ReminderFactory, ReminderPolicy, cancel_reminders, schedule_reminders
from domain.booking.rules import BookingIdentity, BookingPolicy, Candidate, admit
from domain.booking.slots import SlotOffer
from domain.booking.waitlist import WaitlistHook
from domain.catalogue.model import Hospital
from domain.catalogue.ports import CatalogueRepository, HisGateway, HisRejectedError
from domain.kernel.audit import AuditRepository
from domain.kernel.clock import Clock, to_shanghai
from domain.kernel.errors import DomainError, NotFoundError, RateLimitedError
from domain.kernel.ids import new_id
from domain.kernel.money import fen_to_yuan
from domain.kernel.outbox import OutboxRepository
from domain.notification.schedule import ScheduleRepository
from domain.patient.use_cases import PatientService, card_use_message
from domain.payment.machine import OrderState
from domain.payment.ports import PaymentRepository
from domain.payment.use_cases import PaymentService

log = logging.getLogger(__name__)

BOOKING_PAYABLE = "booking"
"""The payment orders' ``payable_type`` for bookings."""
CONFIRM_TOPIC = "booking.confirm"
CLOSE_ORDER_TOPIC = "booking.close_order"
REFUND_TOPIC = "booking.refund"
KEEP_LATE_TOPIC = "booking.keep_late"
HIS_CANCEL_TOPIC = "booking.his_cancel"
HIS_LOCK_TOPIC = "booking.his_lock"
HIS_UNLOCK_TOPIC = "booking.his_unlock"
HIS_MOVE_TOPIC = "booking.his_move"
HIS_CHECK_IN_TOPIC = "booking.his_check_in"
HISTORY = timedelta(days=400)
"""How far back a person's bookings are read for the checks (limits: three months; bans: a calendar year)."""


class BookingNotFoundError(NotFoundError):
    code = "booking.not_found"
    message = "预约不存在"


class HoldsBusyError(RateLimitedError):
    code = "booking.busy"
    message = "当前预约人数较多，请稍后重试"


class SlotNotFoundError(NotFoundError):
    code = "booking.slot_not_found"
    message = "号源不存在或已下架"


class BookingRepository(Protocol):
    async def add(self, booking: Booking, *, now: datetime) -> None: ...

    async def get(self, booking_id: str, *, lock: bool = False) -> Booking | None: ...

    async def by_payment_order(self, order_id: str, *, lock: bool = False) -> Booking | None: ...

    async def save(self, before: Booking, after: Booking, *, now: datetime) -> None: ...

    async def of_person(self, person_id: str, *, since: datetime) -> Sequence[Booking]: ...

    async def of_persons(self, person_ids: Sequence[str], *, limit: int) -> Sequence[Booking]: ...

    async def due_for_expiry(self, *, now: datetime, limit: int) -> Sequence[str]: ...

    async def awaiting_confirmation(self, *, older_than: datetime, limit: int) -> Sequence[str]: ...

    async def lock_person(self, person_id: str) -> bool: ...

    async def offer(self, hospital_code: str, slot_id: str) -> SlotOffer | None: ...

    async def take(self, hospital_code: str, slot_id: str) -> bool: ...

    async def release(self, hospital_code: str, slot_id: str) -> bool: ...

    async def of_sessions(self, hospital_code: str, session_ids: Sequence[str]) -> Sequence[Booking]:
        """Every booking of these sessions (stopped sessions, the doctor's schedule: domain/booking/stops.py,
        doctor_schedule.py), by slot time."""
        ...

    # rescheduling, arrival and no-shows (domain/booking/visits.py)

    async def lock_slots(self, hospital_code: str, slot_ids: Sequence[str]) -> None:
        """Lock the slots' rows in a fixed order (a reschedule changes two: no deadlock between opposite moves)."""
        ...

    async def past_check_in(self, *, now: datetime, limit: int) -> Sequence[str]:
        """Confirmed bookings whose check-in window closed before ``now`` (no-show candidates)."""
        ...

    async def add_ban_lift(self, lift: BanLift) -> None: ...

    async def ban_lifts(self, person_id: str) -> Sequence[BanLift]:
        """The person's ban lifts, latest first."""
        ...

    async def ban_forgiven_until(self, person_id: str) -> datetime | None:
        """The latest ``covers_until`` of the person's ban lifts (APT-008), or None."""
        ...


class BookingUnitOfWork(Protocol):
    @property
    def bookings(self) -> BookingRepository: ...

    @property
    def catalogue(self) -> CatalogueRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def schedule(self) -> ScheduleRepository:
        """The notification service's scheduled messages: a booking's reminders change with it."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...


GateRebuild = Callable[[SlotGate, date, date], Awaitable[int]]


@dataclass(slots=True)
class BookingDeps:
    uow_factory: Callable[[], BookingUnitOfWork]
    clock: Clock
    patients: PatientService
    payments: PaymentService
    his: HisGateway | None = None
    gate: SlotGate | None = None
    policy: BookingPolicy = field(default_factory=BookingPolicy)
    gate_rebuild: GateRebuild | None = None
    """Overwrites the gate from PostgreSQL for the sessions of the given days; the number of slots written."""
    max_holds_in_flight: int = 16
    """Holds this process runs at once (each needs a database connection); the rest get 429 at once."""
    confirm_after: timedelta = timedelta(minutes=1)
    """A paid booking not confirmed for this long is confirmed again by the sweep."""
    reminders: ReminderFactory | None = None
    """Builds the reminders' rows (the notification service); None: no reminders (domain/booking/reminders.py)."""
    reminder_policy: ReminderPolicy = field(default_factory=ReminderPolicy)
    waitlist: WaitlistHook | None = None
    """A number given back with ``offer_waitlist`` stays taken for its session's waitlist when someone waits
    (domain/booking/waitlist_service.py); None: it goes back to the pool."""


@dataclass(frozen=True, slots=True)
class HoldResult:
    booking: Booking
    created: bool = True


class BookingService:
    def __init__(self, deps: BookingDeps) -> None:
        self.d = deps
        self._holds_in_flight = 0

    def _now(self) -> datetime:
        return self.d.clock.now()

    # ------------------------------------------------------------------ holding (the hot path)

    async def hold(self, account_id: str, patient_id: str, hospital_code: str, slot_id: str) -> Booking:
        """Take one number of a slot for a patient of this account: HELD with a payment order (PAID at once for a
        free slot). Refusals: sold out, outside the window, a limit of the person, a ban, not real-name."""
        key = slot_key(hospital_code, slot_id)
        gate = self.d.gate
        answer = await gate.admit(key) if gate is not None else None
        if answer is not None and answer.sold_out:
            raise SlotFullError("sold out (gate)")
        if self._holds_in_flight >= self.d.max_holds_in_flight:
            # More holds than this process's database pool can serve: turn the rest away at once (429 with
            # Retry-After) instead of letting them wait for a connection until they time out.
            if gate is not None and answer is not None:
                await gate.returned(key, answer.ticket)
            raise HoldsBusyError("too many holds in flight", retry_after=1)
        self._holds_in_flight += 1
        try:
            patient = await self.d.patients.usable(account_id, patient_id)
            booking = await self._hold(account_id, patient.person, hospital_code, slot_id)
        except BaseException:
            if gate is not None and answer is not None:
                await gate.returned(key, answer.ticket)  # the ticket the gate gave this request goes back unused
            raise
        finally:
            self._holds_in_flight -= 1
        if gate is not None and answer is not None:
            await gate.taken(key, answer.ticket)
        return booking

    async def _hold(self, account_id: str, person: Any, hospital_code: str, slot_id: str) -> Booking:
        now = self._now()
        async with self.d.uow_factory() as uow:
            await uow.bookings.lock_person(person.id)
            hospital = await uow.catalogue.hospital(hospital_code)
            offer = await uow.bookings.offer(hospital_code, slot_id)
            if hospital is None or offer is None or not hospital.active:
                raise SlotNotFoundError("no such slot")
            history = await uow.bookings.of_person(person.id, since=now - HISTORY)
            identity = BookingIdentity(
                person_id=person.id,
                verified=person.verified,
                has_document=bool(person.doc_number),
                guardian_verified=person.guardian_person_id is not None,
            )
            candidate = Candidate.at(person.id, hospital_code, offer.department_code, offer.start, replacing=None)
            # An operator's lift of a ban (APT-008) is read only when the history could ban at all.
            ban_events = any(b.state in (BookingState.NO_SHOW, BookingState.CANCELLED) for b in history)
            refusal = admit(
                self.d.policy,
                identity=identity,
                person_bookings=history,
                candidate=candidate,
                hospital_rules=hospital.rules,
                now=now,
                forgiven_until=await uow.bookings.ban_forgiven_until(person.id) if ban_events else None,
            )
            if refusal is not None:
                raise refusal
            outcome = hold(
                Hold(
                    booking_id=new_id(),
                    account_id=account_id,
                    person_id=person.id,
                    offer=offer,
                    rules=hospital.rules,
                    at=now,
                    payment_order_id=new_id() if offer.fee_fen else None,
                )
            )
            booking = outcome.booking
            await self._in_transaction(uow, booking, outcome.effects, hospital=hospital, now=now)
            await uow.bookings.add(booking, now=now)
            if booking.state is BookingState.HELD:
                await self._notify(uow, booking, hospital, "booking.held", now=now)
            await uow.commit()
        return booking

    # ------------------------------------------------------------------ reading

    async def bookings_of(self, account_id: str, *, limit: int = 50) -> Sequence[Booking]:
        """The bookings of every patient this account manages (a child's bookings made by the other parent too)."""
        person_ids = await self.d.patients.person_ids_of(account_id)
        async with self.d.uow_factory() as uow:
            return await uow.bookings.of_persons(person_ids, limit=limit)

    async def booking_for(self, account_id: str, booking_id: str) -> Booking:
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        if booking is None or booking.person_id not in await self.d.patients.person_ids_of(account_id):
            raise BookingNotFoundError("no such booking for this account")
        return booking

    # ------------------------------------------------------------------ resident's changes

    async def cancel(self, account_id: str, booking_id: str) -> Booking:
        """Cancel (APT-006: a paid booking only before its cut-off): the number goes back, a paid booking is
        refunded, a confirmed registration is cancelled at the HIS."""
        booking = await self.booking_for(account_id, booking_id)
        return await self.apply_event(booking.id, CancelRequested(self._now()))

    # ------------------------------------------------------------------ payments, HIS, sweeps

    async def on_payment_event(self, what: str, payload: Mapping[str, Any]) -> None:
        """The payment service's ``payment.<what>`` messages for booking orders."""
        if payload.get("payableType") != BOOKING_PAYABLE:
            return
        order_id = str(payload.get("orderId", ""))
        now = self._now()
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.by_payment_order(order_id)
            offer = None if booking is None else await uow.bookings.offer(booking.hospital_code, booking.slot_id)
        if booking is None:
            log.warning("booking_payment_without_booking", extra={"order": order_id})
            return
        if what == "paid":
            await self.apply_event(booking.id, Paid(order_id, now, offer))
        elif what == "paid_late":
            await self.apply_event(booking.id, PaidLate(order_id, now, offer))
        elif what == "closed" and booking.state is BookingState.HELD:
            # The order expired at the payment service first: the hold goes with it.
            await self.apply_event(booking.id, HoldExpired(now))

    async def confirm(self, booking_id: str) -> BookingState | None:
        """Register a paid booking at the HIS (key: the booking id, so a retry returns the same registration).
        A refusal is final (refund); an unavailable HIS raises and the sweep tries again."""
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        if booking is None or booking.state is not BookingState.PAID:
            return None if booking is None else booking.state
        if self.d.his is None:
            raise DomainError("no HIS gateway", code="his.not_configured")
        patid = await self.d.patients.hospital_patid(booking.person_id, booking.hospital_code)
        adapter = self.d.his.for_hospital(booking.hospital_code)
        try:
            registration = await adapter.confirm(
                booking.slot_id, patid=patid, key=f"booking:{booking.id}", lock_id=booking.his_lock_id
            )
        except HisRejectedError as exc:
            return (await self.apply_event(booking.id, HisRefused(exc.code, self._now()))).state
        event = HisConfirmed(registration.registration_id, self._now(), registration.queue_number)
        return (await self.apply_event(booking.id, event)).state

    async def expire(self, booking_id: str) -> BookingState | None:
        """A hold past its deadline: its payment order is closed at the channel first (a payment found there
        pays the booking instead), then the hold expires and the number goes back."""
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        if booking is None or booking.state is not BookingState.HELD:
            return None if booking is None else booking.state
        if booking.payment_order_id is not None:
            order_state = await self.d.payments.expire(booking.payment_order_id)
            if order_state in (OrderState.PAID, OrderState.PAID_LATE):
                return (await self._current(booking.id)).state  # payment.paid moves it on
        return (await self.apply_event(booking.id, HoldExpired(self._now()))).state

    async def sweep(self, *, limit: int = 200) -> dict[str, int]:
        now = self._now()
        async with self.d.uow_factory() as uow:
            due = await uow.bookings.due_for_expiry(now=now, limit=limit)
            stale = await uow.bookings.awaiting_confirmation(older_than=now - self.d.confirm_after, limit=limit)
        expired = confirmed = 0
        for booking_id in due:
            try:
                if await self.expire(booking_id) is BookingState.EXPIRED:
                    expired += 1
            except DomainError as exc:
                log.warning("booking_expire_failed", extra={"booking": booking_id, "code": exc.code})
        for booking_id in stale:
            try:
                if await self.confirm(booking_id) is BookingState.CONFIRMED:
                    confirmed += 1
            except DomainError as exc:
                log.warning("booking_confirm_failed", extra={"booking": booking_id, "code": exc.code})
        return {"expired": expired, "confirmed": confirmed}

    async def rebuild_gate(self, *, days: int = 15) -> int:
        """Reset the gate's counts from PostgreSQL (on start and periodically): the gate is a cache. The reading is
        the persistence side's, paged in short transactions (``GateRebuild``)."""
        if self.d.gate is None or self.d.gate_rebuild is None:
            return 0
        today = to_shanghai(self._now()).date()
        return await self.d.gate_rebuild(self.d.gate, today, today + timedelta(days=days))

    # ------------------------------------------------------------------ effects after the commit

    async def close_order(self, order_id: str) -> None:
        await self.d.payments.expire(order_id)

    async def refund(self, order_id: str, amount_fen: int, reason: str) -> None:
        await self.d.payments.request_refund(order_id, amount_fen=amount_fen, reason=reason, key=f"booking-{reason}")

    async def keep_late(self, order_id: str) -> None:
        await self.d.payments.keep_late(order_id)

    async def cancel_at_his(self, hospital_code: str, registration_id: str, booking_id: str) -> None:
        if self.d.his is None:
            raise DomainError("no HIS gateway", code="his.not_configured")
        # One key per registration: a rescheduled booking has had more than one (domain/booking/visits.py).
        await self.d.his.for_hospital(hospital_code).cancel(
            registration_id, reason="resident_cancelled", key=f"booking-cancel:{booking_id}:{registration_id}"
        )

    async def lock_at_his(self, booking_id: str) -> None:
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        if booking is None or booking.state is not BookingState.HELD or booking.his_lock_id or self.d.his is None:
            return
        patid = await self.d.patients.hospital_patid(booking.person_id, booking.hospital_code)
        lock = await self.d.his.for_hospital(booking.hospital_code).lock(
            booking.slot_id, patid=patid, key=f"booking-lock:{booking.id}"
        )
        await self.apply_event(booking.id, LockedAtHis(lock.lock_id, self._now()))

    async def unlock_at_his(self, hospital_code: str, lock_id: str) -> None:
        if self.d.his is not None:
            await self.d.his.for_hospital(hospital_code).unlock(lock_id, key=f"unlock:{lock_id}")

    # ------------------------------------------------------------------ internals

    async def _current(self, booking_id: str) -> Booking:
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id)
        if booking is None:
            raise BookingNotFoundError("no such booking")
        return booking

    async def apply_event(self, booking_id: str, event: Event) -> Booking:
        """Apply one event under the booking's row lock, carry out the in-transaction effects, queue the rest."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            booking = await uow.bookings.get(booking_id, lock=True)
            if booking is None:
                raise BookingNotFoundError("no such booking")
            outcome = apply(booking, event)
            if not outcome.changed:
                await uow.commit()
                return booking
            hospital = await uow.catalogue.hospital(booking.hospital_code)
            released = await self._in_transaction(uow, outcome.booking, outcome.effects, hospital=hospital, now=now)
            await uow.bookings.save(booking, outcome.booking, now=now)
            await uow.commit()
        if self.d.gate is not None:
            # Best effort: the periodic rebuild corrects whatever is missed here. A number kept for the waitlist
            # was not released: the gate still counts it taken.
            for key in released:
                await self.d.gate.released(key)
        return outcome.booking

    async def _in_transaction(
        self,
        uow: BookingUnitOfWork,
        booking: Booking,
        effects: Sequence[Effect],
        *,
        hospital: Hospital | None,
        now: datetime,
    ) -> list[str]:
        """Numbers and payment orders change in this transaction; everything else goes to the outbox. Returns the
        gate keys of the numbers that went back to the pool (tell the gate ``released`` after the commit)."""
        released: list[str] = []
        for effect in effects:
            match effect:
                case TakeSlot(hospital_code, slot_id):
                    if not await uow.bookings.take(hospital_code, slot_id):
                        raise SlotFullError(f"slot {slot_id} full")
                case ReleaseSlot(hospital_code, slot_id, offer_waitlist):
                    if (
                        offer_waitlist
                        and self.d.waitlist is not None
                        and await self.d.waitlist.keep_for_waitlist(uow, hospital_code, slot_id, now=now)
                    ):
                        continue  # still taken: offered to the first in line (booking.waitlist_offer)
                    if not await uow.bookings.release(hospital_code, slot_id):
                        log.error("booking_release_nothing_taken", extra={"slot": slot_id})
                    released.append(slot_key(hospital_code, slot_id))
                case CreatePaymentOrder(order_id, amount, expires_at):
                    await self.d.payments.create_order(
                        uow,  # type: ignore[arg-type]  # the persistence unit of work serves every feature
                        payable_type=BOOKING_PAYABLE,
                        payable_id=booking.id,
                        account_id=booking.account_id,
                        description=f"挂号费 {hospital.name if hospital else booking.hospital_code}"[:64],
                        amount=amount,
                        expires_at=expires_at,
                        order_id=order_id,
                    )
                case ConfirmAtHis():
                    await uow.outbox.add(
                        CONFIRM_TOPIC, {"bookingId": booking.id}, now=now, key=f"{booking.id}:confirm:{booking.version}"
                    )
                case ClosePaymentOrder(order_id):
                    await uow.outbox.add(CLOSE_ORDER_TOPIC, {"orderId": order_id}, now=now, key=f"{order_id}:close")
                case RequestRefund(order_id, amount_fen, reason):
                    await uow.outbox.add(
                        REFUND_TOPIC,
                        {"orderId": order_id, "amountFen": amount_fen, "reason": reason},
                        now=now,
                        key=f"{order_id}:refund:{reason}",
                    )
                case KeepLatePayment(order_id):
                    await uow.outbox.add(KEEP_LATE_TOPIC, {"orderId": order_id}, now=now, key=f"{order_id}:keep")
                case CancelAtHis(hospital_code, registration_id):
                    await uow.outbox.add(
                        HIS_CANCEL_TOPIC,
                        {"bookingId": booking.id, "hospitalCode": hospital_code, "registrationId": registration_id},
                        now=now,
                        key=f"{booking.id}:his_cancel",
                    )
                case LockAtHis():
                    await uow.outbox.add(HIS_LOCK_TOPIC, {"bookingId": booking.id}, now=now, key=f"{booking.id}:lock")
                case UnlockAtHis(hospital_code, lock_id):
                    await uow.outbox.add(
                        HIS_UNLOCK_TOPIC,
                        {"hospitalCode": hospital_code, "lockId": lock_id},
                        now=now,
                        key=f"{booking.id}:unlock:{lock_id}",
                    )
                case Notify(event, _):
                    if hospital is not None:
                        await self._notify(uow, booking, hospital, event, now=now)
                case ReportCardUse(person_id, hospital_code, scene):
                    topic, payload = card_use_message(booking.account_id, person_id, hospital_code, scene)
                    await uow.outbox.add(topic, payload, now=now, key=f"{booking.id}:card:{scene}")
                case MoveAtHis(hospital_code, registration_id, from_slot_id, to_slot_id):
                    # Confirm on the new slot, then cancel the old registration (domain/booking/visits.py); one
                    # message per reschedule, its HIS keys numbered by ``move``.
                    await uow.outbox.add(
                        HIS_MOVE_TOPIC,
                        {
                            "bookingId": booking.id,
                            "hospitalCode": hospital_code,
                            "registrationId": registration_id,
                            "fromSlotId": from_slot_id,
                            "toSlotId": to_slot_id,
                            "move": booking.reschedules,
                        },
                        now=now,
                        key=f"{booking.id}:his_move:{booking.reschedules}",
                    )
                case CheckInAtHis(hospital_code, registration_id):
                    await uow.outbox.add(
                        HIS_CHECK_IN_TOPIC,
                        {"bookingId": booking.id, "hospitalCode": hospital_code, "registrationId": registration_id},
                        now=now,
                        key=f"{booking.id}:his_check_in",
                    )
                case ScheduleReminders(slot_start) if self.d.reminders is not None:
                    await schedule_reminders(
                        uow.schedule,
                        self.d.reminders,
                        booking,
                        hospital_name=hospital.name if hospital else booking.hospital_code,
                        slot_start=slot_start,
                        policy=self.d.reminder_policy,
                        now=now,
                    )
                case CancelReminders():
                    await cancel_reminders(uow.schedule, booking.id, now=now)
                case _:
                    # ScheduleReminders without a notification service (tests, tools).
                    log.info("booking_effect_not_carried_out", extra={"effect": type(effect).__name__})
        return released

    async def _notify(
        self, uow: BookingUnitOfWork, booking: Booking, hospital: Hospital, event: str, *, now: datetime
    ) -> None:
        start = to_shanghai(booking.slot_start)
        values = {
            "hospital": hospital.name,
            "time": start.strftime("%Y-%m-%d %H:%M"),
            "amount": fen_to_yuan(booking.fee_fen) + "元",
            "deadline": to_shanghai(booking.deadlines.hold_expires_at).strftime("%H:%M")
            if booking.deadlines.hold_expires_at
            else "",
        }
        await uow.outbox.add(
            event,
            {"accountId": booking.account_id, "values": values, "subject": f"booking:{booking.id}"},
            now=now,
            key=f"{booking.id}:{event}:{booking.version}",
        )
