"""The waitlist (候补; issue: booking item 5) under random interleavings: residents book, pay, cancel and let holds
expire (the booking machine), others join the line of a full session, freed numbers are held for the line and
offered in order, offers are delivered, accepted, left or lapse, sessions stop, and free numbers of a waited-for
session are offered by the sweep.

A small model stands beside the machines, as the use cases carry out their effects: the slot pool (the
conditional UPDATEs), the numbers held for a line (``waitlist_numbers``), the bookings and the entries. It checks
that a number is never held twice (taken = live bookings + offered entries + held numbers, within capacity), that a
freed number goes to exactly one person at a time and in line order, skipping whoever already holds a booking in
that department and day (APT-005), and that a lapsed offer passes the number on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.booking.machine import (
    CancelRequested,
    CreatePaymentOrder,
    Event,
    HisConfirmed,
    Hold,
    HoldExpired,
    Outcome,
    Paid,
    Priority,
    ReleaseSlot,
    SessionStopped,
    TakeSlot,
    apply,
    hold,
)
from domain.booking.model import HOLDS_NUMBER, Booking, BookingState
from domain.booking.rules import Candidate, PersonLimits, check_limits, check_window
from domain.booking.slots import SlotOffer, SlotStock, release, take
from domain.booking.waitlist import (
    LAPSED_EVENT,
    OFFERED_EVENT,
    SESSION_STOPPED,
    Delivered,
    Lapse,
    Leave,
    NotifyResident,
    Offer,
    OfferPolicy,
    PassOn,
    ReturnNumber,
    SessionClosed,
    WaitedSession,
    WaitedSlot,
    WaitlistEntry,
    WaitlistState,
    accept,
    check_join,
    in_line,
    new_entry,
    next_in_line,
    offer_deadline,
    offer_refusal,
    promised_deadline,
)
from domain.booking.waitlist import Event as EntryEvent
from domain.booking.waitlist import Outcome as EntryOutcome
from domain.booking.waitlist import apply as apply_entry
from domain.catalogue.model import SessionStatus
from domain.catalogue.rules import BookingRules
from domain.kernel.clock import SHANGHAI
from domain.kernel.errors import DomainError

H = "H001"
RULES = BookingRules()  # 7-day window from 08:00, no same-day booking, 15 minutes to pay
POLICY = OfferPolicy(hold=timedelta(minutes=30), delivery_grace=timedelta(minutes=10))
LIMITS = PersonLimits()
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
    "S2": SessionDef("S2", "D1", 500),  # the same department and day as S1: APT-005 skips across them
    "S3": SessionDef("S3", "D2", 0),  # a free clinic: an accepted offer is PAID at once
}
SLOTS = {
    "A": SlotDef("A", "S1", 1, DAY2),
    "B": SlotDef("B", "S1", 1, DAY2 + timedelta(minutes=30)),
    "C": SlotDef("C", "S2", 1, DAY2 + timedelta(hours=5)),
    "F": SlotDef("F", "S3", 1, DAY2 + timedelta(days=1)),
}
PERSONS = ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]


def offer_for(slot: SlotDef, stock: SlotStock, status: SessionStatus = SessionStatus.OPEN) -> SlotOffer:
    session = SESSIONS[slot.session]
    return SlotOffer(
        hospital_code=H,
        session_id=session.id,
        slot_id=slot.id,
        department_code=session.department,
        doctor_code="doc-" + session.id,
        start=slot.start,
        end=slot.start + timedelta(minutes=30),
        fee_fen=session.fee_fen,
        session_status=status,
        stock=stock,
    )


class WaitlistMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.pool = {s.id: SlotStock(H, s.id, s.capacity) for s in SLOTS.values()}
        self.status = dict.fromkeys(SESSIONS, SessionStatus.OPEN)
        self.bookings: dict[str, Booking] = {}
        self.entries: dict[str, WaitlistEntry] = {}
        self.held: list[str] = []
        """Numbers held for a line (``waitlist_numbers``), by slot id, oldest first."""
        self.notices: list[tuple[str, str]] = []
        self.accepted_bookings: set[str] = set()
        self.counter = 0

    # ------------------------------------------------------------------ the model's carrying out

    def session_of(self, slot_id: str) -> str:
        return SLOTS[slot_id].session

    def someone_waits(self, session: str) -> bool:
        return any(e.state is WaitlistState.WAITING and e.session_id == session for e in self.entries.values())

    def keep_or_release(self, slot_id: str) -> None:
        """``keep_for_waitlist``: the number stays taken for the line when someone waits, else it goes back."""
        if self.someone_waits(self.session_of(slot_id)):
            self.held.append(slot_id)
        else:
            self.pool[slot_id] = release(self.pool[slot_id])

    def carry_out(self, booking_id: str, outcome: Outcome) -> None:
        if not outcome.changed:
            return
        for effect in outcome.effects:
            match effect:
                case TakeSlot(_, slot_id):
                    self.pool[slot_id] = take(self.pool[slot_id])
                case ReleaseSlot(_, slot_id, offer_waitlist):
                    if offer_waitlist:
                        self.keep_or_release(slot_id)
                    else:
                        self.pool[slot_id] = release(self.pool[slot_id])
                case _:
                    pass
        self.bookings[booking_id] = outcome.booking

    def carry_out_entry(self, outcome: EntryOutcome) -> None:
        if not outcome.changed:
            return
        self.entries[outcome.entry.id] = outcome.entry  # saved first: it no longer waits
        for effect in outcome.effects:
            match effect:
                case PassOn(_, slot_id):
                    self.keep_or_release(slot_id)
                case ReturnNumber(_, slot_id):
                    self.pool[slot_id] = release(self.pool[slot_id])
                case NotifyResident(event, priority):
                    self.notices.append((outcome.entry.id, event))
                    if event == OFFERED_EVENT:
                        assert priority is Priority.URGENT, "an offer is urgent"

    def feed(self, booking_id: str, event: Event) -> None:
        try:
            outcome = apply(self.bookings[booking_id], event)
        except DomainError:
            return
        self.carry_out(booking_id, outcome)

    def feed_entry(self, entry_id: str, event: EntryEvent) -> None:
        try:
            outcome = apply_entry(self.entries[entry_id], event)
        except DomainError:
            return
        self.carry_out_entry(outcome)

    def person_bookings(self, person: str) -> list[Booking]:
        return [b for b in self.bookings.values() if b.person_id == person]

    def person_entries(self, person: str) -> list[WaitlistEntry]:
        return [e for e in self.entries.values() if e.person_id == person and e.live]

    def refusal(self, entry: WaitlistEntry) -> DomainError | None:
        return offer_refusal(
            entry,
            person_bookings=self.person_bookings(entry.person_id),
            person_entries=self.person_entries(entry.person_id),
            limits=LIMITS,
            bans=(),
            now=self.now,
        )

    def offer(self, slot_id: str) -> WaitlistEntry | None:
        """``WaitlistService._offer``: the number (already counted taken) to the first eligible person in line."""
        slot = SLOTS[slot_id]
        if self.status[slot.session] is not SessionStatus.OPEN or check_window(RULES, slot.start, self.now):
            return None
        line = [e for e in self.entries.values() if e.session_id == slot.session]
        chosen = next_in_line(line, self.refusal)
        if chosen is None:
            if self.someone_waits(slot.session):
                event("nobody in line may have the number (APT-005/008)")
            return None
        # In line order: everyone before the chosen one was skipped for a reason of APT-005/008.
        for ahead in in_line(line):
            if ahead.id == chosen.id:
                break
            assert self.refusal(ahead) is not None, f"{ahead.id} was skipped without a reason"
            event("someone in line skipped (APT-005/008)")
        there = (chosen.hospital_code, chosen.department_code, chosen.visit_day)
        assert not any(
            b.live_at(self.now) and (b.hospital_code, b.department_code, b.visit_day) == there
            for b in self.person_bookings(chosen.person_id)
        ), "APT-005: a person holding a booking in that department and day is skipped"
        before = sum(1 for e in self.entries.values() if e.state is WaitlistState.OFFERED)
        self.carry_out_entry(apply_entry(chosen, Offer(slot_id, slot.start, POLICY, self.now)))
        after = sum(1 for e in self.entries.values() if e.state is WaitlistState.OFFERED)
        assert after == before + 1, "a number goes to exactly one person"
        event("a number offered")
        return self.entries[chosen.id]

    def pick(self, data: st.DataObject, *states: WaitlistState) -> str | None:
        if not self.entries:
            return None
        fitting = sorted(e.id for e in self.entries.values() if e.state in states)
        if fitting and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(fitting))
        return data.draw(st.sampled_from(sorted(self.entries)))

    def pick_booking(self, data: st.DataObject, *states: BookingState) -> str | None:
        fitting = sorted(b.id for b in self.bookings.values() if b.state in states)
        return data.draw(st.sampled_from(fitting)) if fitting else None

    # ------------------------------------------------------------------ rules: bookings

    @initialize(
        paid=st.lists(st.booleans(), min_size=4, max_size=4),
        waiters=st.lists(st.tuples(st.sampled_from(PERSONS[3:]), st.sampled_from(["S1", "S2", "S3"])), max_size=6),
    )
    def the_sessions_are_full(self, paid: list[bool], waiters: list[tuple[str, str]]) -> None:
        """p1, p2 take S1's numbers, p3 S2's (the same department and day), p4 the free clinic's; some others
        wait (p3 may not for S1, nor p1 and p2 for S2: APT-005)."""
        for person, slot, pay in zip(("p1", "p2", "p3", "p4"), ("A", "B", "C", "F"), paid, strict=True):
            self.a_resident_books(person, slot)
            booking = next(b for b in self.bookings.values() if b.person_id == person)
            if pay and booking.payment_order_id is not None:
                self.feed(booking.id, Paid(booking.payment_order_id, self.now))
        for person, session in waiters:
            self.a_resident_joins(person, session)
            self.now += timedelta(seconds=1)

    @rule(person=st.sampled_from(PERSONS), slot=st.sampled_from(sorted(SLOTS)))
    def a_resident_books(self, person: str, slot: str) -> None:
        definition = SLOTS[slot]
        offer = offer_for(definition, self.pool[slot], self.status[definition.session])
        candidate = Candidate.at(person, H, offer.department_code, offer.start, replacing=None)
        if check_limits(self.bookings.values(), candidate, LIMITS, self.now) is not None:
            return
        self.counter += 1
        booking_id = f"b{self.counter:03d}"
        order = None if offer.fee_fen == 0 else f"o{self.counter:03d}"
        try:
            outcome = hold(Hold(booking_id, "acct-" + person, person, offer, RULES, self.now, order))
        except DomainError:
            return
        self.carry_out(booking_id, outcome)

    @rule(data=st.data())
    def a_booking_is_paid_and_confirmed(self, data: st.DataObject) -> None:
        booking_id = self.pick_booking(data, BookingState.HELD, BookingState.PAID)
        if booking_id is None:
            return
        booking = self.bookings[booking_id]
        if booking.state is BookingState.HELD and booking.payment_order_id is not None:
            self.feed(booking_id, Paid(booking.payment_order_id, self.now))
        else:
            self.feed(booking_id, HisConfirmed("R" + booking_id, self.now, 1))

    @rule(data=st.data())
    def a_resident_cancels(self, data: st.DataObject) -> None:
        booking_id = self.pick_booking(data, BookingState.HELD, BookingState.PAID, BookingState.CONFIRMED)
        if booking_id is not None:
            self.feed(booking_id, CancelRequested(self.now))

    @rule(data=st.data())
    def a_hold_expires(self, data: st.DataObject) -> None:
        booking_id = self.pick_booking(data, BookingState.HELD)
        if booking_id is not None:
            self.feed(booking_id, HoldExpired(self.now))

    # ------------------------------------------------------------------ rules: the line

    @rule(person=st.sampled_from(PERSONS), session=st.sampled_from(sorted(SESSIONS)))
    def a_resident_joins(self, person: str, session: str) -> None:
        definition = SESSIONS[session]
        waited = WaitedSession(
            H,
            session,
            definition.department,
            DAY2.date() if session != "S3" else (DAY2 + timedelta(days=1)).date(),
            self.status[session],
            tuple(WaitedSlot(self.pool[s.id], s.start) for s in SLOTS.values() if s.session == session),
        )
        if check_join(waited, RULES, self.now) is not None:
            return
        if any(e.session_id == session for e in self.person_entries(person)):
            return  # the unique index of live entries
        candidate = Candidate(person, H, definition.department, waited.day)
        if check_limits(self.bookings.values(), candidate, LIMITS, self.now) is not None:
            return
        self.counter += 1
        entry = new_entry(
            entry_id=f"e{self.counter:03d}",
            account_id="acct-" + person,
            person_id=person,
            patient_id="pt-" + person,
            session=waited,
            at=self.now,
        )
        self.entries[entry.id] = entry
        event("joined")

    @rule(data=st.data())
    def a_held_number_is_offered(self, data: st.DataObject) -> None:
        """``booking.waitlist_offer``: one held number, to the first eligible person, or back to the pool."""
        if not self.held:
            return
        slot_id = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        if self.offer(slot_id) is None:
            self.pool[slot_id] = release(self.pool[slot_id])

    @rule(slot=st.sampled_from(sorted(SLOTS)))
    def the_sweep_offers_a_free_number(self, slot: str) -> None:
        """A free number of a session with a line (a raised capacity, a number nobody could have before)."""
        if self.pool[slot].free <= 0 or not self.someone_waits(self.session_of(slot)):
            return
        self.pool[slot] = take(self.pool[slot])
        if self.offer(slot) is None:
            self.pool[slot] = release(self.pool[slot])  # rolled back

    @rule(data=st.data(), delay=st.sampled_from([0, 1, 9, 10, 11, 40]))
    def an_offer_is_delivered(self, data: st.DataObject, delay: int) -> None:
        entry_id = self.pick(data, WaitlistState.OFFERED)
        if entry_id is None:
            return
        entry = self.entries[entry_id]
        at = (entry.offered_at or self.now) + timedelta(minutes=delay)
        self.now = max(self.now, at)
        before = entry.offer_expires_at
        self.feed_entry(entry_id, Delivered(POLICY, at))
        after = self.entries[entry_id]
        if before is not None and after.offer_expires_at is not None:
            assert after.offer_expires_at <= before, "a delivery only moves the deadline earlier"

    @rule(data=st.data())
    def the_offered_resident_accepts(self, data: st.DataObject) -> None:
        entry_id = self.pick(data, WaitlistState.OFFERED)
        if entry_id is None:
            return
        entry = self.entries[entry_id]
        if entry.slot_id is None:
            with pytest.raises(DomainError):
                apply_entry(entry, Lapse(self.now))
            return
        slot = SLOTS[entry.slot_id]
        candidate = Candidate.at(entry.person_id, H, entry.department_code, slot.start, replacing=None)
        if check_limits(self.bookings.values(), candidate, LIMITS, self.now) is not None:
            return  # refused under the person's lock: the offer stays
        self.counter += 1
        booking_id = f"b{self.counter:03d}"
        offer = offer_for(slot, self.pool[slot.id], self.status[slot.session])
        order = None if offer.fee_fen == 0 else f"o{self.counter:03d}"
        request = Hold(booking_id, entry.account_id, entry.person_id, offer, RULES, self.now, order)
        try:
            accepted, booked = accept(entry, request)
        except DomainError:
            return
        assert not any(isinstance(e, TakeSlot) for e in booked.effects), "the offered number is not taken twice"
        if order is not None:
            assert any(isinstance(e, CreatePaymentOrder) for e in booked.effects)
            assert booked.booking.state is BookingState.HELD
        self.carry_out(booking_id, booked)
        self.carry_out_entry(accepted)
        self.accepted_bookings.add(booking_id)
        event("an offer accepted")

    @rule(data=st.data())
    def the_sweep_lapses_an_offer(self, data: st.DataObject) -> None:
        entry_id = self.pick(data, WaitlistState.OFFERED)
        if entry_id is not None:
            self.lapse(entry_id)

    @rule()
    def the_sweep_runs(self) -> None:
        """Every offer past its deadline lapses, then every held number is offered (or given back)."""
        for entry in sorted(self.entries.values(), key=lambda e: e.id):
            if entry.state is WaitlistState.OFFERED and entry.offer_expires_at and entry.offer_expires_at <= self.now:
                self.lapse(entry.id)
        while self.held:
            slot_id = self.held.pop(0)
            if self.offer(slot_id) is None:
                self.pool[slot_id] = release(self.pool[slot_id])

    def lapse(self, entry_id: str) -> None:
        entry = self.entries[entry_id]
        waiting_before = self.someone_waits(entry.session_id)
        held_before = len(self.held)
        self.feed_entry(entry_id, Lapse(self.now))
        lapsed = self.entries[entry_id]
        if lapsed.state is WaitlistState.LAPSED and entry.state is WaitlistState.OFFERED:
            assert lapsed.ended_at is not None
            assert entry.offer_expires_at is not None
            assert lapsed.ended_at >= entry.offer_expires_at, "never before its deadline"
            assert (entry.id, LAPSED_EVENT) in self.notices
            if waiting_before:
                assert len(self.held) == held_before + 1, "the lapsed offer's number passes to the next"
                event("a lapsed number passed on")

    @rule(data=st.data())
    def a_resident_leaves(self, data: st.DataObject) -> None:
        entry_id = self.pick(data, WaitlistState.WAITING, WaitlistState.OFFERED)
        if entry_id is not None:
            self.feed_entry(entry_id, Leave(self.now))

    @rule(data=st.data(), how=st.sampled_from(["minutes", "deadline"]))
    def time_passes(self, data: st.DataObject, how: str) -> None:
        offered = sorted(e.id for e in self.entries.values() if e.state is WaitlistState.OFFERED)
        if how == "minutes" or not offered:
            self.now += timedelta(minutes=data.draw(st.sampled_from([1, 9, 16, 29, 31, 45, 90])))
            return
        deadline = self.entries[data.draw(st.sampled_from(offered))].offer_expires_at
        assert deadline is not None
        self.now = max(self.now, deadline + timedelta(seconds=data.draw(st.sampled_from([-1, 0, 1]))))

    @rule(session=st.sampled_from(sorted(SESSIONS)), really=st.integers(0, 5))
    def a_session_is_stopped(self, session: str, really: int) -> None:
        if really:
            return
        self.status[session] = SessionStatus.STOPPED
        for booking in list(self.bookings.values()):
            if booking.session_id == session:
                self.feed(booking.id, SessionStopped("停诊", self.now))
        for entry in list(self.entries.values()):
            if entry.session_id == session:
                self.feed_entry(entry.id, SessionClosed(SESSION_STOPPED, self.now))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def a_number_is_never_held_twice(self) -> None:
        for slot_id, stock in self.pool.items():
            bookings = sum(1 for b in self.bookings.values() if b.slot_id == slot_id and b.state in HOLDS_NUMBER)
            offers = sum(1 for e in self.entries.values() if e.holds_number and e.slot_id == slot_id)
            held = self.held.count(slot_id)
            assert stock.taken == bookings + offers + held, slot_id
            assert 0 <= stock.taken <= stock.capacity, slot_id

    @invariant()
    def one_live_entry_per_person_and_session_and_one_offer_per_department_day(self) -> None:
        live = [(e.person_id, e.session_id) for e in self.entries.values() if e.live]
        assert len(live) == len(set(live))
        offered = [
            (e.person_id, e.department_code, e.visit_day)
            for e in self.entries.values()
            if e.state is WaitlistState.OFFERED
        ]
        assert len(offered) == len(set(offered)), "APT-005: one number offered per department and day"

    @invariant()
    def deadlines_count_from_the_delivery(self) -> None:
        for entry in self.entries.values():
            if entry.state is not WaitlistState.OFFERED:
                continue
            assert entry.offered_at is not None
            assert entry.slot_start is not None
            assert entry.offer_expires_at == offer_deadline(
                POLICY, entry.offered_at, entry.delivered_at, entry.slot_start
            )
            assert entry.offer_expires_at <= entry.offered_at + POLICY.delivery_grace + POLICY.hold
            assert promised_deadline(POLICY, entry.offered_at, entry.slot_start) <= entry.offer_expires_at, (
                "the message never shows a later deadline than the real one"
            )

    @invariant()
    def an_accepted_offer_is_the_booking_of_its_number(self) -> None:
        for entry in self.entries.values():
            if entry.state is WaitlistState.HELD:
                assert entry.booking_id is not None
                booking = self.bookings[entry.booking_id]
                assert (booking.person_id, booking.slot_id) == (entry.person_id, entry.slot_id)
                assert entry.ended_at is not None
                assert entry.offer_expires_at is not None
                assert entry.ended_at < entry.offer_expires_at, "accepted before its deadline"


WaitlistMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=80, deadline=None)
TestWaitlistMachine = WaitlistMachine.TestCase


# ---------------------------------------------------------------------------------------------- examples


def waiting(person: str = "p1", *, at: datetime = T0, entry_id: str = "e1", session: str = "S1") -> WaitlistEntry:
    definition = SESSIONS[session]
    return WaitlistEntry(
        id=entry_id,
        account_id="acct-" + person,
        person_id=person,
        patient_id="pt-" + person,
        hospital_code=H,
        department_code=definition.department,
        session_id=session,
        visit_day=DAY2.date(),
        created_at=at,
    )


def offered(at: datetime = T0) -> WaitlistEntry:
    return apply_entry(waiting(), Offer("A", DAY2, POLICY, at)).entry


def test_the_hold_time_counts_from_the_delivery_at_the_latest_after_the_grace() -> None:
    entry = offered()
    assert entry.offer_expires_at == T0 + timedelta(minutes=40), "not delivered yet: the latest deadline"
    delivered = apply_entry(entry, Delivered(POLICY, T0 + timedelta(minutes=3))).entry
    assert delivered.delivered_at == T0 + timedelta(minutes=3)
    assert delivered.offer_expires_at == T0 + timedelta(minutes=33)
    again = apply_entry(delivered, Delivered(POLICY, T0 + timedelta(minutes=5)))
    assert again.changed is False, "the first delivery counts"
    late = apply_entry(entry, Delivered(POLICY, T0 + timedelta(minutes=25))).entry
    assert late.offer_expires_at == T0 + timedelta(minutes=40), "a late delivery never extends the offer"
    close = T0 + timedelta(minutes=20)
    assert offer_deadline(POLICY, T0, T0, close) == close, "never after the slot starts"


def test_an_offer_is_urgent_and_lapses_only_after_its_deadline_passing_the_number_on() -> None:
    outcome = apply_entry(waiting(), Offer("A", DAY2, POLICY, T0))
    assert outcome.entry.state is WaitlistState.OFFERED
    assert outcome.effects == (NotifyResident(OFFERED_EVENT, Priority.URGENT),)
    deadline = outcome.entry.offer_expires_at
    assert deadline is not None
    with pytest.raises(DomainError) as early:
        apply_entry(outcome.entry, Lapse(deadline - timedelta(seconds=1)))
    assert early.value.code == "waitlist.offer_not_lapsed"
    lapsed = apply_entry(outcome.entry, Lapse(deadline))
    assert lapsed.entry.state is WaitlistState.LAPSED
    assert lapsed.effects == (PassOn(H, "A"), NotifyResident(LAPSED_EVENT, Priority.TRANSACTIONAL))
    assert apply_entry(lapsed.entry, Lapse(deadline)).changed is False


def test_accepting_books_the_offered_number_without_taking_it_again() -> None:
    entry = offered()
    slot = offer_for(SLOTS["A"], SlotStock(H, "A", 1, 1))  # full: its one number is the offer's
    accepted, booked = accept(entry, Hold("b1", "acct-p1", "p1", slot, RULES, T0 + timedelta(minutes=5), "o1"))
    assert accepted.entry.state is WaitlistState.HELD
    assert accepted.entry.booking_id == "b1"
    assert booked.booking.state is BookingState.HELD
    assert booked.booking.deadlines.hold_expires_at == T0 + timedelta(minutes=20), "a normal hold: 15 minutes"
    assert not any(isinstance(e, TakeSlot) for e in booked.effects)
    assert any(isinstance(e, CreatePaymentOrder) for e in booked.effects)
    with pytest.raises(DomainError) as late:
        accept(entry, Hold("b2", "acct-p1", "p1", slot, RULES, T0 + timedelta(minutes=40), "o2"))
    assert late.value.code == "waitlist.offer_lapsed"
    with pytest.raises(DomainError) as stranger:
        accept(entry, Hold("b3", "acct-p2", "p2", slot, RULES, T0, "o3"))
    assert stranger.value.code == "waitlist.offer_mismatch"
    with pytest.raises(DomainError) as nothing:
        accept(waiting(), Hold("b4", "acct-p1", "p1", slot, RULES, T0, "o4"))
    assert nothing.value.code == "waitlist.no_offer"


def test_leaving_passes_an_offered_number_on_and_a_closed_session_returns_it() -> None:
    assert apply_entry(waiting(), Leave(T0)).effects == ()
    left = apply_entry(offered(), Leave(T0))
    assert left.entry.state is WaitlistState.CANCELLED
    assert left.effects == (PassOn(H, "A"),)
    closed = apply_entry(offered(), SessionClosed(SESSION_STOPPED, T0))
    assert closed.effects == (ReturnNumber(H, "A"),)
    assert closed.entry.end_reason == SESSION_STOPPED


def test_one_may_wait_only_for_a_full_open_session_still_to_come() -> None:
    full = WaitedSession(H, "S1", "D1", DAY2.date(), SessionStatus.OPEN, (WaitedSlot(SlotStock(H, "A", 1, 1), DAY2),))
    assert check_join(full, RULES, T0) is None
    free = replace(full, slots=(WaitedSlot(SlotStock(H, "A", 2, 1), DAY2),))
    assert (refusal := check_join(free, RULES, T0)) is not None
    assert refusal.code == "waitlist.session_not_full"
    stopped = replace(full, status=SessionStatus.STOPPED)
    assert (refusal := check_join(stopped, RULES, T0)) is not None
    assert refusal.code == "booking.session_not_open"
    assert (refusal := check_join(full, RULES, DAY2 + timedelta(minutes=1))) is not None
    assert refusal.code == "waitlist.session_over"


def test_the_next_in_line_skips_a_person_with_a_booking_in_that_department_and_day() -> None:
    first = waiting("p1", entry_id="e1")
    second = waiting("p2", at=T0 + timedelta(seconds=1), entry_id="e2")
    booked = hold(Hold("b1", "acct-p1", "p1", offer_for(SLOTS["C"], SlotStock(H, "C", 1)), RULES, T0, "o1")).booking

    def refusal(entry: WaitlistEntry) -> DomainError | None:
        mine = [booked] if entry.person_id == "p1" else []
        return offer_refusal(entry, person_bookings=mine, person_entries=(), limits=LIMITS, bans=(), now=T0)

    assert next_in_line([second, first], lambda _: None) == first, "in line order"
    assert next_in_line([second, first], refusal) == second
    skipped = refusal(first)
    assert skipped is not None
    assert skipped.code == "booking.limit_department_day"
