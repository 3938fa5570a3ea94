"""The booking state machine and the slot pool (DESIGN §5; issue: time-slot booking) under random interleavings
of holds, payments (on time, late, repeated), expiries, cancellations, reschedules, stopped sessions, catalogue
syncs (capacity and time), HIS answers, check-ins and no-shows, over a few slots and persons.

A small model stands beside the machine: the slot pool the effects act on (``take``/``release``, as the
conditional UPDATE would), the payment orders (open, closed, paid) and the refunds asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.booking.errors import SlotFullError, SlotReleaseError
from domain.booking.machine import (
    CancelAtHis,
    CancelRequested,
    CheckedIn,
    CheckInAtHis,
    CheckInWindowPassed,
    ClosePaymentOrder,
    ConfirmAtHis,
    CreatePaymentOrder,
    Event,
    HisConfirmed,
    HisRefused,
    Hold,
    HoldExpired,
    KeepLatePayment,
    MoveAtHis,
    Notify,
    Outcome,
    Paid,
    PaidLate,
    Priority,
    ReleaseSlot,
    ReportCardUse,
    RequestRefund,
    RescheduleRequested,
    SessionStopped,
    SlotChanged,
    TakeSlot,
    VisitCompleted,
    apply,
    hold,
)
from domain.booking.model import HOLDS_NUMBER, TERMINAL, Booking, BookingState
from domain.booking.rules import Candidate, PersonLimits, check_limits
from domain.booking.slots import SlotOffer, SlotStock, release, resize, take
from domain.catalogue.model import SessionStatus
from domain.catalogue.rules import BookingRules
from domain.kernel.clock import SHANGHAI
from domain.kernel.errors import DomainError

H = "H001"
RULES = BookingRules()  # 7-day window from 08:00, cut-off 15:00 the day before, 15 min to pay, check-in -60/+30
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=SHANGHAI)
DAY2 = datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)


@dataclass(frozen=True)
class SessionDef:
    id: str
    department: str
    fee_fen: int


@dataclass(frozen=True)
class SlotDef:
    id: str
    session: str
    capacity: int
    start: datetime


SESSIONS = {
    "S1": SessionDef("S1", "D1", 500),
    "S2": SessionDef("S2", "D1", 500),
    "S3": SessionDef("S3", "D2", 0),
}
SLOTS = [
    SlotDef("A", "S1", 1, DAY2),
    SlotDef("B", "S1", 2, DAY2 + timedelta(minutes=30)),
    SlotDef("C", "S2", 1, DAY2 + timedelta(days=1)),
    SlotDef("F", "S3", 1, DAY2 + timedelta(hours=5)),
]
PERSONS = ["p1", "p2", "p3"]


def offer_for(slot: SlotDef, stock: SlotStock, status: SessionStatus, start: datetime | None = None) -> SlotOffer:
    session = SESSIONS[slot.session]
    begins = start or slot.start
    return SlotOffer(
        hospital_code=H,
        session_id=session.id,
        slot_id=slot.id,
        department_code=session.department,
        doctor_code="doc-" + session.id,
        start=begins,
        end=begins + timedelta(minutes=30),
        fee_fen=session.fee_fen,
        session_status=status,
        stock=stock,
    )


class BookingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.pool = {(H, s.id): SlotStock(H, s.id, s.capacity) for s in SLOTS}
        self.starts = {s.id: s.start for s in SLOTS}
        self.status = dict.fromkeys(SESSIONS, SessionStatus.OPEN)
        self.bookings: dict[str, Booking] = {}
        self.orders: dict[str, str] = {}
        """order id -> open | closed | paid"""
        self.refunds: dict[str, int] = {}
        """booking id -> refunds requested"""
        self.terminal: dict[str, BookingState] = {}
        self.counter = 0

    # ------------------------------------------------------------------ helpers

    def offer(self, slot_id: str) -> SlotOffer:
        slot = next(s for s in SLOTS if s.id == slot_id)
        return offer_for(slot, self.pool[(H, slot_id)], self.status[slot.session], self.starts[slot_id])

    def carry_out(self, booking_id: str, outcome: Outcome) -> None:
        if not outcome.changed:
            assert outcome.effects == ()
            return
        for effect in outcome.effects:
            match effect:
                case TakeSlot(hospital, slot_id):
                    # The machine only takes a number it saw free: the conditional UPDATE never finds it full.
                    self.pool[(hospital, slot_id)] = take(self.pool[(hospital, slot_id)])
                case ReleaseSlot(hospital, slot_id, _):
                    self.pool[(hospital, slot_id)] = release(self.pool[(hospital, slot_id)])
                case CreatePaymentOrder(order_id, amount, _):
                    assert amount.self_pay_fen > 0
                    self.orders[order_id] = "open"
                case ClosePaymentOrder(order_id):
                    if self.orders[order_id] == "open":
                        self.orders[order_id] = "closed"
                case RequestRefund(order_id, amount_fen, _):
                    assert self.orders.get(order_id) == "paid", "a refund asked for an unpaid booking"
                    assert amount_fen == outcome.booking.fee_fen > 0
                    self.refunds[booking_id] = self.refunds.get(booking_id, 0) + 1
                case KeepLatePayment(order_id):
                    assert self.orders[order_id] == "paid"
                case _:
                    pass
        self.bookings[booking_id] = outcome.booking

    def feed(self, booking_id: str, event: Event) -> None:
        try:
            outcome = apply(self.bookings[booking_id], event)
        except DomainError:
            return  # refused moves (stable codes) change nothing
        self.carry_out(booking_id, outcome)

    def pick(self, data: st.DataObject, *states: BookingState) -> str | None:
        """Mostly a booking in one of ``states`` (where the event means something), sometimes any (where it
        must be refused or change nothing)."""
        if not self.bookings:
            return None
        fitting = sorted(b.id for b in self.bookings.values() if b.state in states)
        if fitting and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(fitting))
        return data.draw(st.sampled_from(sorted(self.bookings)))

    def book(self, person: str, slot: str) -> str | None:
        offer = self.offer(slot)
        candidate = Candidate.at(person, H, offer.department_code, offer.start, replacing=None)
        if check_limits(self.bookings.values(), candidate, PersonLimits(), self.now) is not None:
            return None
        self.counter += 1
        booking_id = f"b{self.counter}"
        order_id = None if offer.fee_fen == 0 else f"o{self.counter}"
        try:
            outcome = hold(Hold(booking_id, "acct-" + person, person, offer, RULES, self.now, order_id))
        except DomainError:
            return None
        self.carry_out(booking_id, outcome)
        return booking_id

    def pay(self, booking_id: str) -> None:
        booking = self.bookings[booking_id]
        if booking.payment_order_id is None:
            return
        state = self.orders[booking.payment_order_id]
        self.orders[booking.payment_order_id] = "paid"
        event: Event
        if state == "closed":  # paid while the close was on its way: the channel reports a late success
            event = PaidLate(booking.payment_order_id, self.now, self.offer(booking.slot_id))
        else:  # a success, or the same notification again
            event = Paid(booking.payment_order_id, self.now, self.offer(booking.slot_id))
        self.feed(booking_id, event)

    # ------------------------------------------------------------------ rules

    @initialize(confirmed=st.lists(st.sampled_from(["A", "B", "C"]), max_size=2))
    def some_bookings_are_confirmed_already(self, confirmed: list[str]) -> None:
        for index, slot in enumerate(confirmed):
            booking_id = self.book(PERSONS[index], slot)
            if booking_id is not None:
                self.pay(booking_id)
                self.feed(booking_id, HisConfirmed("R" + booking_id, self.now, 1))

    @rule(person=st.sampled_from(PERSONS), slot=st.sampled_from([s.id for s in SLOTS]))
    def a_resident_holds(self, person: str, slot: str) -> None:
        self.book(person, slot)

    @rule(data=st.data(), late=st.booleans())
    def the_resident_pays(self, data: st.DataObject, late: bool) -> None:
        """On time, late (the order was closed meanwhile), or the same notification again."""
        if (booking_id := self.pick(data, BookingState.EXPIRED if late else BookingState.HELD)) is not None:
            self.pay(booking_id)

    @rule(data=st.data(), how=st.sampled_from(["minutes", "deadline"]))
    def time_passes(self, data: st.DataObject, how: str) -> None:
        if how == "minutes" or not self.bookings:
            self.now += timedelta(minutes=data.draw(st.sampled_from([1, 14, 16, 90, 600, 1440])))
            return
        # Land on the edges that matter: the hold's expiry, the cut-off, the check-in window.
        times = self.bookings[data.draw(st.sampled_from(sorted(self.bookings)))].deadlines
        second = timedelta(seconds=1)
        edges = [
            times.hold_expires_at or times.cancel_deadline,
            times.cancel_deadline - second,
            times.cancel_deadline,
            times.checkin_opens_at,
            times.checkin_closes_at,
            times.checkin_closes_at + second,
        ]
        self.now = max(self.now, data.draw(st.sampled_from(edges)))

    @rule(data=st.data())
    def the_sweep_expires_a_hold(self, data: st.DataObject) -> None:
        if (booking_id := self.pick(data, BookingState.HELD)) is not None:
            self.feed(booking_id, HoldExpired(self.now))

    @rule(data=st.data())
    def the_resident_cancels(self, data: st.DataObject) -> None:
        if (booking_id := self.pick(data, BookingState.HELD, BookingState.PAID, BookingState.CONFIRMED)) is not None:
            self.feed(booking_id, CancelRequested(self.now))

    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]))
    def the_his_answers(self, data: st.DataObject, ok: bool) -> None:
        if (booking_id := self.pick(data, BookingState.PAID)) is not None:
            self.feed(booking_id, HisConfirmed("R" + booking_id, self.now, 7) if ok else HisRefused("full", self.now))

    @rule(data=st.data(), slot=st.sampled_from([s.id for s in SLOTS]))
    def the_resident_reschedules(self, data: st.DataObject, slot: str) -> None:
        if (booking_id := self.pick(data, BookingState.CONFIRMED)) is not None:
            self.feed(booking_id, RescheduleRequested(self.offer(slot), RULES, self.now))

    @rule(session=st.sampled_from(sorted(SESSIONS)), really=st.integers(0, 3))
    def a_session_is_stopped(self, session: str, really: int) -> None:
        if really:
            return  # rarer than the rest: a stop ends every booking of the session
        self.status[session] = SessionStatus.STOPPED
        for booking in list(self.bookings.values()):
            if booking.session_id == session:
                self.feed(booking.id, SessionStopped("医生临时停诊", self.now))

    @rule(
        slot=st.sampled_from([s.id for s in SLOTS]),
        capacity=st.none() | st.integers(0, 3),
        shift=st.sampled_from([0, -30, 30, 120]),
    )
    def a_catalogue_sync(self, slot: str, capacity: int | None, shift: int) -> None:
        """The HIS changes a slot's capacity (never applied below what was sold) or moves its time."""
        if capacity is not None:
            self.pool[(H, slot)] = resize(self.pool[(H, slot)], capacity).stock
        if shift:
            self.starts[slot] += timedelta(minutes=shift)
            start = self.starts[slot]
            for booking in list(self.bookings.values()):
                if booking.slot_id == slot:
                    self.feed(booking.id, SlotChanged(start, start + timedelta(minutes=30), RULES, self.now))

    @rule(data=st.data(), what=st.sampled_from(["check_in", "stranger", "his_check_in", "no_show", "done"]))
    def the_visit_day(self, data: st.DataObject, what: str) -> None:
        if (booking_id := self.pick(data, BookingState.CONFIRMED, BookingState.CHECKED_IN)) is None:
            return
        booking = self.bookings[booking_id]
        person = booking.person_id
        # The visit day comes: time moves on to an edge of the check-in window (APT-010), or stays.
        second = timedelta(seconds=1)
        opens, closes = booking.deadlines.checkin_opens_at, booking.deadlines.checkin_closes_at
        self.now = max(self.now, data.draw(st.sampled_from([self.now, opens - second, opens, closes, closes + second])))
        events: dict[str, Event] = {
            "check_in": CheckedIn(person, self.now),
            "stranger": CheckedIn("stranger", self.now),
            "his_check_in": CheckedIn(person, self.now, at_his=True),
            "no_show": CheckInWindowPassed(self.now),
            "done": VisitCompleted(self.now),
        }
        self.feed(booking_id, events[what])

    # ------------------------------------------------------------------ invariants

    @invariant()
    def taken_counts_equal_live_bookings_and_stay_within_capacity(self) -> None:
        for (_, slot_id), stock in self.pool.items():
            live = sum(1 for b in self.bookings.values() if b.slot_id == slot_id and b.state in HOLDS_NUMBER)
            assert stock.taken == live, slot_id
            assert 0 <= stock.taken <= stock.capacity, slot_id

    @invariant()
    def terminal_states_stay_terminal(self) -> None:
        for booking in self.bookings.values():
            seen = self.terminal.get(booking.id)
            if seen is not None:
                assert booking.state is seen, f"{booking.id} left {seen} for {booking.state}"
            elif booking.state in TERMINAL:
                self.terminal[booking.id] = booking.state

    @invariant()
    def refunds_only_for_paid_bookings_and_every_lost_payment_refunded(self) -> None:
        for booking in self.bookings.values():
            paid = booking.payment_order_id is not None and self.orders.get(booking.payment_order_id) == "paid"
            refunds = self.refunds.get(booking.id, 0)
            assert refunds <= 1
            if refunds:
                assert paid
            assert booking.paid == paid
            if paid and booking.state in (
                BookingState.CANCELLED,
                BookingState.STOPPED,
                BookingState.CONFIRM_FAILED,
                BookingState.REFUNDED_LATE,
            ):
                assert refunds == 1, f"{booking.id} paid and {booking.state} without a refund"
            if booking.state in (BookingState.HELD, BookingState.EXPIRED):
                assert not paid
            if booking.state in (BookingState.PAID, BookingState.CONFIRMED, BookingState.CHECKED_IN):
                assert refunds == 0
                assert paid or booking.fee_fen == 0

    @invariant()
    def a_paid_booking_is_cancelled_only_before_its_cut_off(self) -> None:
        for booking in self.bookings.values():
            if booking.state is BookingState.CANCELLED and booking.paid_at is not None:
                assert booking.ended_at is not None
                if booking.paid_at < booking.ended_at:  # paid first, then cancelled
                    assert booking.ended_at < booking.deadlines.cancel_deadline, "APT-006"

    @invariant()
    def a_no_show_is_marked_only_after_the_check_in_window(self) -> None:
        for booking in self.bookings.values():
            if booking.state is BookingState.NO_SHOW:
                assert booking.ended_at is not None
                assert booking.ended_at > booking.deadlines.checkin_closes_at

    @invariant()
    def an_open_hold_has_an_open_order(self) -> None:
        for booking in self.bookings.values():
            if booking.state is BookingState.HELD:
                assert booking.payment_order_id is not None
                assert self.orders[booking.payment_order_id] == "open"


BookingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestBookingMachine = BookingMachine.TestCase


# ---------------------------------------------------------------------------------------------- examples


def fresh(slot: str = "A", *, taken: int = 0, order: str | None = "o1", at: datetime = T0) -> Outcome:
    definition = next(s for s in SLOTS if s.id == slot)
    stock = SlotStock(H, slot, definition.capacity, taken)
    return hold(Hold("b1", "acct-1", "p1", offer_for(definition, stock, SessionStatus.OPEN), RULES, at, order))


def confirmed() -> Booking:
    booking = fresh().booking
    booking = apply(booking, Paid("o1", T0)).booking
    return apply(booking, HisConfirmed("R1", T0)).booking


def test_a_paid_slot_is_held_with_a_payment_order_until_the_deadline() -> None:
    outcome = fresh()
    assert outcome.booking.state is BookingState.HELD
    assert outcome.effects[0] == TakeSlot(H, "A")
    (order,) = [e for e in outcome.effects if isinstance(e, CreatePaymentOrder)]
    assert order.amount.self_pay_fen == 500
    assert order.expires_at == T0 + timedelta(minutes=15)


def test_a_free_slot_skips_payment() -> None:
    outcome = fresh("F", order=None)
    assert outcome.booking.state is BookingState.PAID
    assert outcome.effects == (TakeSlot(H, "F"), ConfirmAtHis(H, "F", None))
    assert outcome.booking.deadlines.hold_expires_at is None
    confirmed = apply(outcome.booking, HisConfirmed("R1", T0)).booking
    cancelled = apply(confirmed, CancelRequested(T0))
    assert not any(isinstance(e, RequestRefund) for e in cancelled.effects), "nothing to refund"


def test_a_full_slot_or_a_stopped_session_is_refused() -> None:
    with pytest.raises(SlotFullError) as caught:
        fresh(taken=1)
    assert caught.value.code == "booking.slot_full"
    definition = SLOTS[0]
    offer = offer_for(definition, SlotStock(H, "A", 1), SessionStatus.STOPPED)
    with pytest.raises(DomainError) as refused:
        hold(Hold("b1", "a", "p1", offer, RULES, T0, "o1"))
    assert refused.value.code == "booking.session_not_open"


def test_the_slot_pool_refuses_taking_beyond_capacity_and_releasing_nothing() -> None:
    stock = take(SlotStock(H, "A", 2))
    stock = take(stock)
    with pytest.raises(SlotFullError):
        take(stock)
    assert release(release(stock)).taken == 0
    with pytest.raises(SlotReleaseError):
        release(SlotStock(H, "A", 2))
    shrunk = resize(SlotStock(H, "A", 3, 2), 1)
    assert shrunk.conflict
    assert (shrunk.stock.capacity, shrunk.stock.taken) == (2, 2), "never below what was sold"


def test_an_expired_hold_closes_the_order_first_and_releases_the_number_to_the_waitlist() -> None:
    held = fresh().booking
    with pytest.raises(DomainError) as early:
        apply(held, HoldExpired(T0 + timedelta(minutes=14, seconds=59)))
    assert early.value.code == "booking.hold_not_expired"
    expired = apply(held, HoldExpired(T0 + timedelta(minutes=15)))
    assert expired.booking.state is BookingState.EXPIRED
    assert expired.effects[:2] == (ClosePaymentOrder("o1"), ReleaseSlot(H, "A", offer_waitlist=True))
    assert apply(expired.booking, HoldExpired(T0 + timedelta(hours=1))).changed is False


def test_a_late_payment_retakes_a_free_number_or_is_refunded() -> None:
    expired = apply(fresh().booking, HoldExpired(T0 + timedelta(minutes=15))).booking
    later = T0 + timedelta(minutes=20)
    free = offer_for(SLOTS[0], SlotStock(H, "A", 1, 0), SessionStatus.OPEN)
    kept = apply(expired, PaidLate("o1", later, free))
    assert kept.booking.state is BookingState.PAID
    assert kept.effects == (TakeSlot(H, "A"), KeepLatePayment("o1"), ConfirmAtHis(H, "A", None))
    gone = offer_for(SLOTS[0], SlotStock(H, "A", 1, 1), SessionStatus.OPEN)
    refunded = apply(expired, PaidLate("o1", later, gone))
    assert refunded.booking.state is BookingState.REFUNDED_LATE
    assert RequestRefund("o1", 500, "slot_gone") in refunded.effects
    assert apply(expired, PaidLate("o1", later, None)).booking.state is BookingState.REFUNDED_LATE


def test_a_payment_landing_on_a_cancelled_hold_is_refunded_and_the_state_stays() -> None:
    cancelled = apply(fresh().booking, CancelRequested(T0)).booking
    late = apply(cancelled, PaidLate("o1", T0 + timedelta(minutes=1)))
    assert late.booking.state is BookingState.CANCELLED
    assert late.effects == (RequestRefund("o1", 500, "cancelled"),)
    assert apply(late.booking, PaidLate("o1", T0 + timedelta(minutes=1))).changed is False


def test_a_confirmation_landing_after_a_cancellation_is_cancelled_at_the_his() -> None:
    paid = apply(fresh().booking, Paid("o1", T0)).booking
    cancelled = apply(paid, CancelRequested(T0 + timedelta(minutes=1)))
    assert RequestRefund("o1", 500, "cancelled") in cancelled.effects
    late = apply(cancelled.booking, HisConfirmed("R1", T0 + timedelta(minutes=2)))
    assert late.booking.state is BookingState.CANCELLED
    assert late.effects == (CancelAtHis(H, "R1"),)


def test_a_refusal_by_the_his_releases_and_refunds() -> None:
    paid = apply(fresh().booking, Paid("o1", T0)).booking
    failed = apply(paid, HisRefused("号源已满", T0))
    assert failed.booking.state is BookingState.CONFIRM_FAILED
    assert ReleaseSlot(H, "A", offer_waitlist=True) in failed.effects
    assert RequestRefund("o1", 500, "his_refused") in failed.effects
    assert Notify("booking.confirm_failed", Priority.URGENT) in failed.effects


def test_a_stopped_session_refunds_without_offering_the_number_on() -> None:
    stopped = apply(confirmed(), SessionStopped("停诊", T0))
    assert stopped.booking.state is BookingState.STOPPED
    assert ReleaseSlot(H, "A", offer_waitlist=False) in stopped.effects
    assert RequestRefund("o1", 500, "stopped") in stopped.effects
    assert Notify("booking.session_stopped", Priority.URGENT) in stopped.effects
    assert apply(stopped.booking, SessionStopped("停诊", T0)).changed is False


def test_a_reschedule_takes_the_new_number_and_releases_the_old_in_one_step() -> None:
    booking = confirmed()
    target = offer_for(SLOTS[1], SlotStock(H, "B", 2, 1), SessionStatus.OPEN)
    moved = apply(booking, RescheduleRequested(target, RULES, T0))
    assert moved.booking.state is BookingState.CONFIRMED
    assert (moved.booking.slot_id, moved.booking.slot_start) == ("B", SLOTS[1].start)
    assert moved.effects[:3] == (
        TakeSlot(H, "B"),
        ReleaseSlot(H, "A", offer_waitlist=True),
        MoveAtHis(H, "R1", "A", "B"),
    )
    with pytest.raises(SlotFullError):
        apply(booking, RescheduleRequested(replace(target, stock=SlotStock(H, "B", 2, 2)), RULES, T0))
    free_clinic = offer_for(SLOTS[3], SlotStock(H, "F", 1), SessionStatus.OPEN)
    with pytest.raises(DomainError) as other:
        apply(booking, RescheduleRequested(free_clinic, RULES, T0))
    assert other.value.code == "booking.reschedule_not_allowed"


def test_check_in_reports_the_card_use_and_a_visit_completes_it() -> None:
    booking = confirmed()
    opens = booking.deadlines.checkin_opens_at
    checked = apply(booking, CheckedIn("p1", opens))
    assert checked.booking.state is BookingState.CHECKED_IN
    assert CheckInAtHis(H, "R1") in checked.effects
    assert ReportCardUse("p1", H) in checked.effects
    done = apply(checked.booking, VisitCompleted(opens + timedelta(hours=1)))
    assert done.booking.state is BookingState.COMPLETED
    with pytest.raises(DomainError):
        apply(done.booking, CancelRequested(opens))


def test_repeated_events_change_nothing() -> None:
    booking = confirmed()
    for event in (Paid("o1", T0), HisConfirmed("R1", T0)):
        again = apply(booking, event)
        assert again.changed is False
        assert again.booking == booking
    with pytest.raises(DomainError) as caught:
        apply(booking, HisConfirmed("R2", T0))
    assert caught.value.code == "booking.registration_mismatch"
    with pytest.raises(DomainError) as caught:
        apply(booking, Paid("o9", T0))
    assert caught.value.code == "booking.payment_mismatch"
