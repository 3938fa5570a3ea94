"""The booking state machine (DESIGN §5) as a pure transition table: (state, event) -> (next state, effects).

    (new)          hold                    -> HELD (a number taken, a payment order created) | PAID (free slot)
    HELD           paid                    -> PAID              confirm at the HIS
    HELD           hold expired            -> EXPIRED           close the order, release the number, offer it on
    HELD           resident cancels        -> CANCELLED         close the order, release the number
    HELD           session stopped         -> STOPPED           close the order, release the number, notify
    EXPIRED        (late) payment          -> PAID              the number re-taken, the late payment kept
                                           | REFUNDED_LATE      the number gone: refund
    PAID           HIS confirms            -> CONFIRMED         notify, schedule reminders
    PAID           HIS refuses for good    -> CONFIRM_FAILED    release, refund, notify
    PAID           session stopped         -> STOPPED           release, refund, notify
    PAID           resident cancels        -> CANCELLED         (before the cut-off) release, refund; a
                                                                confirmation that still lands is cancelled there
    CONFIRMED      resident cancels        -> CANCELLED         (before the cut-off) cancel at the HIS, release,
                                                                refund
    CONFIRMED      reschedule              -> CONFIRMED         (before the cut-off) take the new number and
                                                                release the old in one step; move at the HIS
    CONFIRMED      HIS moved               -> CONFIRMED         the new registration recorded (an unwanted one,
                                                                for a slot left since or a booking ended, is
                                                                cancelled at the HIS)
    CONFIRMED      HIS refuses the move    -> CONFIRM_FAILED    release the new number, cancel the old
                                                                registration, refund, notify
    CONFIRMED      session stopped         -> STOPPED           release, refund, notify, no penalty
    CONFIRMED      check-in                -> CHECKED_IN        report the card use
    CONFIRMED      check-in window passed  -> NO_SHOW           (counts towards the bans of APT-008)
    CHECKED_IN     visit done (HIS)        -> COMPLETED

The effects are what the use case carries out: ``TakeSlot``/``ReleaseSlot`` and ``CreatePaymentOrder`` inside
the transaction that stores the outcome (a ``TakeSlot`` is the conditional ``UPDATE ... WHERE taken <
capacity``: if it finds the slot full the whole step rolls back), everything else through the outbox after the
commit. Repeated events change nothing (``changed=False``); impossible ones raise a ``ConflictError`` with a
stable code. Invariants (``tests/unit/test_booking_machine.py``): a slot's taken count is the number of its
bookings in ``HOLDS_NUMBER`` and never exceeds its capacity; terminal states stay terminal; a refund is requested
only for a paid booking, at most once, and every paid booking that will not be seen is refunded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from domain.booking.errors import (
    CancelTooLateError,
    CheckInTooEarlyError,
    CheckInTooLateError,
    CheckInWindowOpenError,
    HoldNotExpiredError,
    IdentityMismatchError,
    IllegalBookingTransitionError,
    PaymentMismatchError,
    RegistrationMismatchError,
    RescheduleNotAllowedError,
    RescheduleTooLateError,
    SessionNotOpenError,
    SlotFullError,
    SlotMismatchError,
)
from domain.booking.model import UPCOMING, Booking, BookingState
from domain.booking.rules import CANCELLED_BY_RESIDENT, check_window, deadlines
from domain.booking.slots import SlotOffer
from domain.catalogue.rules import BookingRules
from domain.kernel.money import Amount

# -------------------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Hold:
    """A resident books ``offer`` for a person (the person-level checks of ``rules.admit`` passed first)."""

    booking_id: str
    account_id: str
    person_id: str
    offer: SlotOffer
    rules: BookingRules
    """The hospital's rules (APT-004 window, APT-006 cut-off, APT-009 payment deadline, APT-010 check-in)."""
    at: datetime
    payment_order_id: str | None
    """The id for the order to create; None for a free slot (which skips payment)."""


@dataclass(frozen=True, slots=True)
class Paid:
    """The payment order was paid (``payment.paid``)."""

    payment_order_id: str
    at: datetime
    slot: SlotOffer | None = None
    """The booking's slot as it is now, needed only if the booking had expired meanwhile (None: it is gone)."""


@dataclass(frozen=True, slots=True)
class PaidLate:
    """A success on a closed order (``payment.paid_late``): the booking keeps it if its number can be re-taken
    (``KeepLatePayment``), otherwise it is refunded."""

    payment_order_id: str
    at: datetime
    slot: SlotOffer | None = None


@dataclass(frozen=True, slots=True)
class HoldExpired:
    at: datetime


@dataclass(frozen=True, slots=True)
class LockedAtHis:
    """The HIS locked the number (锁号) for a hold, for hospitals with ``lock_at_his``."""

    lock_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class HisConfirmed:
    registration_id: str
    at: datetime
    queue_number: int | None = None


@dataclass(frozen=True, slots=True)
class HisRefused:
    """The HIS refused the registration for good (transient failures are retried, not fed here)."""

    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The resident cancels (APT-006: a paid booking only strictly before its cut-off)."""

    at: datetime


@dataclass(frozen=True, slots=True)
class RescheduleRequested:
    """Move a confirmed booking to ``offer`` (same hospital, department and fee) before the cut-off. The person's
    limits are checked by the use case with ``Candidate(replacing=booking.id)``."""

    offer: SlotOffer
    rules: BookingRules
    at: datetime


@dataclass(frozen=True, slots=True)
class HisMoved:
    """The HIS registered the booking on ``slot_id`` (the ``MoveAtHis`` of a reschedule: confirm on the new slot,
    then cancel ``from_registration_id``)."""

    from_registration_id: str
    registration_id: str
    slot_id: str
    at: datetime
    queue_number: int | None = None


@dataclass(frozen=True, slots=True)
class HisMoveRefused:
    """The HIS refused for good to register the booking on ``slot_id``, the slot it was rescheduled to."""

    slot_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionStopped:
    """停诊 (from the HIS sync or the doctor app): refunded, notified, never a penalty (APT-007)."""

    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SlotChanged:
    """A catalogue sync moved the slot's time: the deadlines follow (the hold's expiry stays)."""

    start: datetime
    end: datetime
    rules: BookingRules
    at: datetime


@dataclass(frozen=True, slots=True)
class CheckedIn:
    """The person checked in (签到/取号): in the app within the window (APT-010), or reported by the HIS
    (``at_his``: the number was collected at the counter, the HIS already knows)."""

    person_id: str
    """Who presents themself: must be the person booked (APT-002)."""
    at: datetime
    at_his: bool = False


@dataclass(frozen=True, slots=True)
class CheckInWindowPassed:
    at: datetime


@dataclass(frozen=True, slots=True)
class VisitCompleted:
    at: datetime


Event = (
    Paid
    | PaidLate
    | HoldExpired
    | LockedAtHis
    | HisConfirmed
    | HisRefused
    | CancelRequested
    | RescheduleRequested
    | HisMoved
    | HisMoveRefused
    | SessionStopped
    | SlotChanged
    | CheckedIn
    | CheckInWindowPassed
    | VisitCompleted
)


# ------------------------------------------------------------------------------------------------------------- effects


class Priority(StrEnum):
    """How soon a notice goes out (the values of ``domain.notification.model.EventClass``)."""

    TRANSACTIONAL = "transactional"
    URGENT = "urgent"
    """Bypasses quiet hours: a stopped session, a failed confirmation, a moved slot."""
    NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class TakeSlot:
    hospital_code: str
    slot_id: str


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    hospital_code: str
    slot_id: str
    offer_waitlist: bool
    """The number can go to the next on the waitlist (not for a stopped session)."""


@dataclass(frozen=True, slots=True)
class CreatePaymentOrder:
    payment_order_id: str
    amount: Amount
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ClosePaymentOrder:
    """Close the order at its channel: before the slot is released (DESIGN §3.6); a success found by the close
    comes back as ``Paid``/``PaidLate``."""

    payment_order_id: str


@dataclass(frozen=True, slots=True)
class KeepLatePayment:
    """Tell the payment order its late payment is kept (``payment.machine.KeepLate``)."""

    payment_order_id: str


@dataclass(frozen=True, slots=True)
class RequestRefund:
    payment_order_id: str
    amount_fen: int
    reason: str


@dataclass(frozen=True, slots=True)
class LockAtHis:
    hospital_code: str
    slot_id: str


@dataclass(frozen=True, slots=True)
class UnlockAtHis:
    hospital_code: str
    lock_id: str


@dataclass(frozen=True, slots=True)
class ConfirmAtHis:
    """Register at the HIS (idempotent key: the booking id)."""

    hospital_code: str
    slot_id: str
    lock_id: str | None


@dataclass(frozen=True, slots=True)
class CancelAtHis:
    hospital_code: str
    registration_id: str


@dataclass(frozen=True, slots=True)
class MoveAtHis:
    """Through the HIS port's ``move``, or cancel + confirm where it has none."""

    hospital_code: str
    registration_id: str
    from_slot_id: str
    to_slot_id: str


@dataclass(frozen=True, slots=True)
class CheckInAtHis:
    hospital_code: str
    registration_id: str


@dataclass(frozen=True, slots=True)
class Notify:
    """A notice to the accounts managing the person: ``event`` names the template (``booking.confirmed``...)."""

    event: str
    priority: Priority


@dataclass(frozen=True, slots=True)
class ScheduleReminders:
    """(Re)build the booking's reminders (keys ``booking:{id}:...``) for a visit at ``slot_start``."""

    slot_start: datetime


@dataclass(frozen=True, slots=True)
class CancelReminders:
    pass


@dataclass(frozen=True, slots=True)
class ReportCardUse:
    """Report the e-health card's use to the card platform (``healthcard.used``)."""

    person_id: str
    hospital_code: str
    scene: str = "booking"


Effect = (
    TakeSlot
    | ReleaseSlot
    | CreatePaymentOrder
    | ClosePaymentOrder
    | KeepLatePayment
    | RequestRefund
    | LockAtHis
    | UnlockAtHis
    | ConfirmAtHis
    | CancelAtHis
    | MoveAtHis
    | CheckInAtHis
    | Notify
    | ScheduleReminders
    | CancelReminders
    | ReportCardUse
)


@dataclass(frozen=True, slots=True)
class Outcome:
    booking: Booking
    effects: tuple[Effect, ...] = field(default_factory=tuple)
    changed: bool = True


# ----------------------------------------------------------------------------------------------------------- the table


def hold(event: Hold) -> Outcome:
    """The new booking: HELD with a number and a payment order, or PAID at once for a free slot. Refuses a
    session that is not open, a slot outside the window (APT-004) and a full slot."""
    offer = event.offer
    if not offer.open:
        raise SessionNotOpenError(f"session {offer.session_id} is {offer.session_status}")
    refusal = check_window(event.rules, offer.start, event.at)
    if refusal is not None:
        raise refusal
    if offer.stock.free <= 0:
        raise SlotFullError(f"slot {offer.slot_id} full")
    free = offer.fee_fen == 0
    if free != (event.payment_order_id is None):
        raise ValueError("a payment order id is needed exactly when the slot costs something")
    times = deadlines(event.rules, offer.start, event.at, free=free)
    booking = Booking(
        id=event.booking_id,
        account_id=event.account_id,
        person_id=event.person_id,
        hospital_code=offer.hospital_code,
        department_code=offer.department_code,
        doctor_code=offer.doctor_code,
        session_id=offer.session_id,
        slot_id=offer.slot_id,
        slot_start=offer.start,
        slot_end=offer.end,
        fee_fen=offer.fee_fen,
        created_at=event.at,
        deadlines=times,
        state=BookingState.PAID if free else BookingState.HELD,
        payment_order_id=event.payment_order_id,
        paid_at=None,
    )
    take = TakeSlot(offer.hospital_code, offer.slot_id)
    if free:
        return Outcome(booking, (take, ConfirmAtHis(offer.hospital_code, offer.slot_id, None)))
    assert event.payment_order_id is not None
    assert times.hold_expires_at is not None
    effects: tuple[Effect, ...] = (
        take,
        CreatePaymentOrder(event.payment_order_id, Amount(offer.fee_fen), times.hold_expires_at),
    )
    if event.rules.lock_at_his:
        effects = (*effects, LockAtHis(offer.hospital_code, offer.slot_id))
    return Outcome(booking, effects)


def apply(booking: Booking, event: Event) -> Outcome:
    """The next booking and the effects to carry out. Repeated events change nothing; impossible ones raise a
    ConflictError with a stable code."""
    result = _apply(booking, event)
    if result.changed:
        return Outcome(replace(result.booking, version=booking.version + 1), result.effects, True)
    return result


def _unchanged(booking: Booking) -> Outcome:
    return Outcome(booking, (), changed=False)


def _illegal(booking: Booking, event: Event) -> IllegalBookingTransitionError:
    return IllegalBookingTransitionError(f"{type(event).__name__} in {booking.state}")


def _release(booking: Booking, *, offer_waitlist: bool) -> ReleaseSlot:
    return ReleaseSlot(booking.hospital_code, booking.slot_id, offer_waitlist)


def _refund(booking: Booking, reason: str) -> tuple[Booking, tuple[Effect, ...]]:
    """Request the refund of a paid booking, once."""
    if not booking.paid or booking.refund_reason is not None or booking.fee_fen == 0:
        return booking, ()
    assert booking.payment_order_id is not None
    return (
        replace(booking, refund_reason=reason),
        (RequestRefund(booking.payment_order_id, booking.fee_fen, reason),),
    )


def _end(booking: Booking, state: BookingState, at: datetime, reason: str) -> Booking:
    return replace(booking, state=state, ended_at=at, end_reason=reason)


def _unlock(booking: Booking) -> tuple[Effect, ...]:
    return () if booking.his_lock_id is None else (UnlockAtHis(booking.hospital_code, booking.his_lock_id),)


def _close_order(booking: Booking) -> tuple[Effect, ...]:
    return () if booking.payment_order_id is None else (ClosePaymentOrder(booking.payment_order_id),)


def _retakable(booking: Booking, slot: SlotOffer | None, at: datetime) -> bool:
    if slot is None:
        return False
    if (slot.hospital_code, slot.slot_id) != (booking.hospital_code, booking.slot_id):
        raise SlotMismatchError("the offer is of another slot")
    return slot.open and slot.stock.free > 0 and at < booking.slot_start


def _payment(booking: Booking, payment_order_id: str, at: datetime, slot: SlotOffer | None, *, late: bool) -> Outcome:
    if booking.payment_order_id is None or payment_order_id != booking.payment_order_id:
        raise PaymentMismatchError(f"order {payment_order_id} is not this booking's")
    if booking.paid:
        return _unchanged(booking)
    paid = replace(booking, paid_at=at)
    keep: tuple[Effect, ...] = (KeepLatePayment(payment_order_id),) if late else ()
    confirm = ConfirmAtHis(booking.hospital_code, booking.slot_id, booking.his_lock_id)
    match booking.state:
        case BookingState.HELD:
            return Outcome(replace(paid, state=BookingState.PAID), (*keep, confirm))
        case BookingState.EXPIRED:
            if _retakable(booking, slot, at):
                retaken = replace(paid, state=BookingState.PAID, ended_at=None, end_reason=None)
                fresh = ConfirmAtHis(booking.hospital_code, booking.slot_id, None)  # any HIS lock went at expiry
                return Outcome(retaken, (TakeSlot(booking.hospital_code, booking.slot_id), *keep, fresh))
            gone, refund = _refund(_end(paid, BookingState.REFUNDED_LATE, at, "slot_gone"), "slot_gone")
            return Outcome(gone, (*refund, Notify("booking.refunded_late", Priority.TRANSACTIONAL)))
        case BookingState.CANCELLED | BookingState.STOPPED:
            # A hold cancelled or stopped before its payment landed: the money goes back, the state stays.
            refunded, refund = _refund(paid, "cancelled" if booking.state is BookingState.CANCELLED else "stopped")
            return Outcome(refunded, refund)
    raise _illegal(booking, PaidLate(payment_order_id, at) if late else Paid(payment_order_id, at))


def _apply(booking: Booking, event: Event) -> Outcome:
    state = booking.state
    match event:
        case Paid(order_id, at, slot):
            return _payment(booking, order_id, at, slot, late=False)

        case PaidLate(order_id, at, slot):
            return _payment(booking, order_id, at, slot, late=True)

        case HoldExpired(at):
            if state is BookingState.EXPIRED:
                return _unchanged(booking)
            if state is not BookingState.HELD:
                raise _illegal(booking, event)
            expires = booking.deadlines.hold_expires_at
            if expires is None or at < expires:
                raise HoldNotExpiredError(f"hold expires at {expires}")
            return Outcome(
                _end(booking, BookingState.EXPIRED, at, "expired"),
                (
                    *_close_order(booking),
                    _release(booking, offer_waitlist=True),
                    *_unlock(booking),
                    Notify("booking.expired", Priority.TRANSACTIONAL),
                ),
            )

        case LockedAtHis(lock_id, _):
            if booking.his_lock_id == lock_id:
                return _unchanged(booking)
            if booking.his_lock_id is not None:
                raise IllegalBookingTransitionError("a second HIS lock", code="booking.his_lock_conflict")
            locked = replace(booking, his_lock_id=lock_id)
            if state in (BookingState.HELD, BookingState.PAID):
                return Outcome(locked)
            if state in (BookingState.EXPIRED, BookingState.CANCELLED, BookingState.STOPPED):
                return Outcome(locked, (UnlockAtHis(booking.hospital_code, lock_id),))  # arrived after the release
            raise _illegal(booking, event)

        case HisConfirmed(registration_id, at, queue_number):
            if booking.his_registration_id is not None:
                if booking.his_registration_id != registration_id:
                    raise RegistrationMismatchError("two registrations for one booking")
                return _unchanged(booking)
            registered = replace(booking, his_registration_id=registration_id, queue_number=queue_number)
            if state is BookingState.PAID:
                return Outcome(
                    replace(registered, state=BookingState.CONFIRMED),
                    (Notify("booking.confirmed", Priority.TRANSACTIONAL), ScheduleReminders(booking.slot_start)),
                )
            if state in (BookingState.CANCELLED, BookingState.STOPPED, BookingState.CONFIRM_FAILED):
                # The confirmation was in flight when the booking ended: undo it at the HIS.
                return Outcome(registered, (CancelAtHis(booking.hospital_code, registration_id),))
            raise _illegal(booking, event)

        case HisRefused(reason, at):
            if state in (BookingState.CONFIRM_FAILED, BookingState.CANCELLED, BookingState.STOPPED):
                return _unchanged(booking)
            if state is not BookingState.PAID:
                raise _illegal(booking, event)
            failed, refund = _refund(_end(booking, BookingState.CONFIRM_FAILED, at, reason[:64]), "his_refused")
            return Outcome(
                failed,
                (
                    _release(booking, offer_waitlist=True),
                    *refund,
                    Notify("booking.confirm_failed", Priority.URGENT),
                ),
            )

        case CancelRequested(at):
            if state is BookingState.CANCELLED:
                return _unchanged(booking)
            if state is BookingState.HELD:
                return Outcome(
                    _end(booking, BookingState.CANCELLED, at, CANCELLED_BY_RESIDENT),
                    (*_close_order(booking), _release(booking, offer_waitlist=True), *_unlock(booking)),
                )
            if state not in (BookingState.PAID, BookingState.CONFIRMED):
                raise _illegal(booking, event)
            if at >= booking.deadlines.cancel_deadline:
                raise CancelTooLateError(f"cut-off {booking.deadlines.cancel_deadline}")
            cancelled, refund = _refund(_end(booking, BookingState.CANCELLED, at, CANCELLED_BY_RESIDENT), "cancelled")
            undo: tuple[Effect, ...] = ()
            if booking.his_registration_id is not None:
                undo = (CancelAtHis(booking.hospital_code, booking.his_registration_id),)
            reminders: tuple[Effect, ...] = (CancelReminders(),) if state is BookingState.CONFIRMED else ()
            return Outcome(
                cancelled,
                (
                    *undo,
                    _release(booking, offer_waitlist=True),
                    *refund,
                    *reminders,
                    Notify("booking.cancelled", Priority.TRANSACTIONAL),
                ),
            )

        case RescheduleRequested(offer, rules, at):
            return _reschedule(booking, offer, rules, at)

        case HisMoved(_, registration_id, slot_id, _, queue_number):
            if booking.his_registration_id == registration_id:
                return _unchanged(booking)
            if state is not BookingState.CONFIRMED or slot_id != booking.slot_id:
                # Moved again since, or ended: the HIS holds a registration nobody wants.
                return Outcome(booking, (CancelAtHis(booking.hospital_code, registration_id),))
            return Outcome(replace(booking, his_registration_id=registration_id, queue_number=queue_number))

        case HisMoveRefused(slot_id, reason, at):
            if state is not BookingState.CONFIRMED or slot_id != booking.slot_id:
                return _unchanged(booking)  # moved again since (that move is tried on its own), or ended
            failed, refund = _refund(_end(booking, BookingState.CONFIRM_FAILED, at, reason[:64]), "his_refused")
            old: tuple[Effect, ...] = ()
            if booking.his_registration_id is not None:
                old = (CancelAtHis(booking.hospital_code, booking.his_registration_id),)
            return Outcome(
                failed,
                (
                    _release(booking, offer_waitlist=True),
                    *old,
                    *refund,
                    CancelReminders(),
                    Notify("booking.confirm_failed", Priority.URGENT),
                ),
            )

        case SessionStopped(reason, at):
            if state is BookingState.CHECKED_IN:
                raise _illegal(booking, event)  # seen on site: the hospital settles it there
            if state not in UPCOMING:
                return _unchanged(booking)  # broadcast to every booking of the session
            stopped = _end(booking, BookingState.STOPPED, at, "stopped")
            effects: tuple[Effect, ...] = (*_close_order(booking),) if state is BookingState.HELD else ()
            stopped, refund = _refund(stopped, "stopped")
            reminders = (CancelReminders(),) if state is BookingState.CONFIRMED else ()
            return Outcome(
                stopped,
                (
                    *effects,
                    _release(booking, offer_waitlist=False),
                    *_unlock(booking),
                    *refund,
                    *reminders,
                    Notify("booking.session_stopped", Priority.URGENT),
                ),
            )

        case SlotChanged(start, end, rules, at):
            if state not in UPCOMING or (start, end) == (booking.slot_start, booking.slot_end):
                return _unchanged(booking)
            times = deadlines(rules, start, at, free=booking.deadlines.hold_expires_at is None)
            times = replace(times, hold_expires_at=booking.deadlines.hold_expires_at)
            moved = replace(booking, slot_start=start, slot_end=end, deadlines=times)
            reminders = (ScheduleReminders(start),) if state is BookingState.CONFIRMED else ()
            return Outcome(moved, (*reminders, Notify("booking.time_changed", Priority.URGENT)))

        case CheckedIn(person_id, at, at_his):
            if state is BookingState.CHECKED_IN:
                return _unchanged(booking)
            if state is not BookingState.CONFIRMED:
                raise _illegal(booking, event)
            if person_id != booking.person_id:
                raise IdentityMismatchError("another person presented")
            if not at_his:
                if at < booking.deadlines.checkin_opens_at:
                    raise CheckInTooEarlyError(f"opens {booking.deadlines.checkin_opens_at}")
                if at > booking.deadlines.checkin_closes_at:
                    raise CheckInTooLateError(f"closed {booking.deadlines.checkin_closes_at}")
            assert booking.his_registration_id is not None
            his: tuple[Effect, ...] = (
                () if at_his else (CheckInAtHis(booking.hospital_code, booking.his_registration_id),)
            )
            return Outcome(
                replace(booking, state=BookingState.CHECKED_IN),
                (*his, ReportCardUse(booking.person_id, booking.hospital_code), CancelReminders()),
            )

        case CheckInWindowPassed(at):
            if state is BookingState.NO_SHOW:
                return _unchanged(booking)
            if state is not BookingState.CONFIRMED:
                raise _illegal(booking, event)
            if at <= booking.deadlines.checkin_closes_at:
                raise CheckInWindowOpenError(f"open until {booking.deadlines.checkin_closes_at}")
            return Outcome(
                _end(booking, BookingState.NO_SHOW, at, "no_show"),
                (CancelReminders(), Notify("booking.no_show", Priority.NORMAL)),
            )

        case VisitCompleted(at):
            if state is BookingState.COMPLETED:
                return _unchanged(booking)
            if state is not BookingState.CHECKED_IN:
                raise _illegal(booking, event)
            return Outcome(_end(booking, BookingState.COMPLETED, at, "completed"))
    raise IllegalBookingTransitionError(f"unknown event {type(event).__name__}")


def _reschedule(booking: Booking, offer: SlotOffer, rules: BookingRules, at: datetime) -> Outcome:
    if booking.state is not BookingState.CONFIRMED:
        raise _illegal(booking, RescheduleRequested(offer, rules, at))
    if at >= booking.deadlines.cancel_deadline:
        raise RescheduleTooLateError(f"cut-off {booking.deadlines.cancel_deadline}")
    if (
        offer.hospital_code != booking.hospital_code
        or offer.department_code != booking.department_code
        or offer.fee_fen != booking.fee_fen
        or offer.slot_id == booking.slot_id
    ):
        raise RescheduleNotAllowedError("another hospital, department or fee, or the same slot")
    if not offer.open:
        raise SessionNotOpenError(f"session {offer.session_id} is {offer.session_status}")
    refusal = check_window(rules, offer.start, at)
    if refusal is not None:
        raise refusal
    if offer.stock.free <= 0:
        raise SlotFullError(f"slot {offer.slot_id} full")
    assert booking.his_registration_id is not None
    times = replace(deadlines(rules, offer.start, at, free=True), hold_expires_at=booking.deadlines.hold_expires_at)
    moved = replace(
        booking,
        session_id=offer.session_id,
        slot_id=offer.slot_id,
        doctor_code=offer.doctor_code,
        slot_start=offer.start,
        slot_end=offer.end,
        deadlines=times,
        reschedules=booking.reschedules + 1,
    )
    return Outcome(
        moved,
        (
            TakeSlot(offer.hospital_code, offer.slot_id),
            _release(booking, offer_waitlist=True),
            MoveAtHis(booking.hospital_code, booking.his_registration_id, booking.slot_id, offer.slot_id),
            ScheduleReminders(offer.start),
            Notify("booking.rescheduled", Priority.TRANSACTIONAL),
        ),
    )
