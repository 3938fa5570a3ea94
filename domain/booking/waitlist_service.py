"""The waitlist's use cases (候补; issue: booking item 5): join, leave, list; offer freed numbers in line order;
accept an offer as a booking; lapse offers whose time passed. The rules are in ``domain/booking/waitlist.py``.

**Where a freed number goes.** ``clinic_slots.taken`` counts every number that is not free::

    taken = live bookings (machine.HOLDS_NUMBER) + offered entries (OFFERED) + held numbers (waitlist_numbers)

When a booking gives a number back with ``ReleaseSlot(offer_waitlist=True)`` (a cancellation, an expired hold, a
failed confirmation, a reschedule's old slot; never a stopped session), the booking service asks
``keep_for_waitlist`` in the same transaction: if someone waits for the slot's session, the number is *not*
released; a ``waitlist_numbers`` row holds it and an outbox message ``booking.waitlist_offer`` asks for its offer
(so nobody outside the line can take it in between). The handler (``offer_number``) gives it to the first person
in line who may book there, under a ``FOR UPDATE SKIP LOCKED`` claim of that entry (two numbers freed at once go
to the first two), or, when nobody may, releases it to the pool. A lapsed offer, and an offer its resident
declines by leaving, pass their number on the same way. Accepting turns the offer into a HELD booking with its
payment order without taking the number again; a session stopped or over returns its offered numbers.

**The Redis gate** (``gate.py``) is told only of numbers that really go back to the pool (``released``): a number
kept for the waitlist, offered, passed on or accepted never becomes free, so the gate, which counts it taken,
stays right; the offered person does not pass through the gate at all when accepting. A free number the sweep
offers (a capacity raised by the catalogue sync, a number released while nobody could have it) is taken without a
ticket: the gate counts it free until its next rebuild, which only lets a request through to PostgreSQL's refusal.

**Deliveries.** The offer's message is a ``booking.waitlist_offered`` outbox message; its id is the deliveries'
``event_id``. When the worker's ``notification.deliver`` has sent a delivery, it calls ``on_delivered``, which
starts the offer's hold time at the delivery's ``sent_at``; the sweep (``booking.waitlist_sweep``, every 30 s)
reads the delivery log for offers still without one (a missed call) and lapses offers whose time passed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from domain.booking.gate import slot_key
from domain.booking.machine import Hold
from domain.booking.model import Booking, BookingState
from domain.booking.rules import BookingIdentity, Candidate, admit
from domain.booking.rules import check_window as booking_window
from domain.booking.use_cases import HISTORY, BookingService, BookingUnitOfWork, SlotNotFoundError
from domain.booking.waitlist import (
    LEFT,
    OFFERED_EVENT,
    SESSION_STOPPED,
    Accept,
    AlreadyWaitingError,
    Delivered,
    Event,
    HeldNumber,
    Lapse,
    Leave,
    NotifyResident,
    Offer,
    OfferPolicy,
    Outcome,
    PassOn,
    ReturnNumber,
    SessionClosed,
    WaitedSession,
    WaitlistEntry,
    WaitlistNotFoundError,
    WaitlistSessionNotFoundError,
    WaitlistState,
    accept,
    apply,
    check_join,
    in_line,
    new_entry,
    offer_refusal,
    promised_deadline,
)
from domain.catalogue.model import Hospital
from domain.kernel.clock import to_shanghai
from domain.kernel.errors import DomainError
from domain.kernel.ids import new_id

log = logging.getLogger(__name__)

OFFER_TOPIC = "booking.waitlist_offer"
"""Outbox topic: offer the held number ``numberId`` to the next in line (``offer_number``)."""


class WaitlistRepository(Protocol):
    async def add(self, entry: WaitlistEntry, *, now: datetime) -> None:
        """Raises ``AlreadyWaitingError`` when the person already waits for the session."""
        ...

    async def get(self, entry_id: str, *, lock: bool = False) -> WaitlistEntry | None: ...

    async def save(self, before: WaitlistEntry, after: WaitlistEntry, *, now: datetime) -> None: ...

    async def of_account(self, account_id: str, *, limit: int) -> Sequence[WaitlistEntry]:
        """The account's entries, latest first."""
        ...

    async def ahead(self, entry: WaitlistEntry) -> int:
        """How many WAITING entries of the entry's session are before it in line."""
        ...

    async def live_of_person(self, person_id: str) -> Sequence[WaitlistEntry]: ...

    async def live_in_session(self, hospital_code: str, session_id: str) -> Sequence[str]:
        """The ids of the session's WAITING and OFFERED entries."""
        ...

    async def waiting(self, hospital_code: str, session_id: str, *, limit: int) -> Sequence[WaitlistEntry]:
        """The session's WAITING entries in line order (no lock)."""
        ...

    async def claim_waiting(self, entry_id: str) -> WaitlistEntry | None:
        """Lock the entry if it is still WAITING and nobody else holds it (``FOR UPDATE SKIP LOCKED``)."""
        ...

    async def by_notice(self, notice_id: str) -> WaitlistEntry | None: ...

    async def session(self, hospital_code: str, session_id: str) -> WaitedSession | None: ...

    async def waiting_session_of_slot(self, hospital_code: str, slot_id: str) -> str | None:
        """The slot's session id when someone WAITING is in its line, else None."""
        ...

    async def add_number(self, number: HeldNumber) -> None: ...

    async def take_number(self, number_id: str) -> HeldNumber | None:
        """Lock and delete the held number (None when another handler took it)."""
        ...

    async def pending_numbers(self, *, older_than: datetime, limit: int) -> Sequence[str]: ...

    async def offers_due(self, *, now: datetime, limit: int) -> Sequence[str]: ...

    async def delivered_offers(self, event_type: str, *, limit: int) -> Sequence[tuple[str, datetime]]:
        """OFFERED entries without a delivery time whose message was sent: (entry id, first ``sent_at``)."""
        ...

    async def delivery(self, delivery_id: int) -> tuple[str, str, datetime | None] | None:
        """A notification delivery's (event id, event type, sent at)."""
        ...

    async def closed_entries(self, *, today: date, limit: int) -> Sequence[tuple[str, str]]:
        """Live entries of sessions stopped, closed or past: (entry id, ``SESSION_STOPPED``/``SESSION_OVER``)."""
        ...

    async def free_waited_slots(self, *, now: datetime, limit: int) -> Sequence[tuple[str, str, str]]:
        """(hospital, session, slot) of open sessions' slots still to come with a free number and someone
        WAITING in line."""
        ...


class WaitlistUnitOfWork(BookingUnitOfWork, Protocol):
    @property
    def waitlist(self) -> WaitlistRepository: ...


@dataclass(slots=True)
class WaitlistDeps:
    uow_factory: Callable[[], WaitlistUnitOfWork]
    bookings: BookingService
    """Its clock, patients, policy (APT-005/008), gate and in-transaction effects are the waitlist's too."""
    policy: OfferPolicy = field(default_factory=OfferPolicy)
    stuck_after: timedelta = timedelta(minutes=1)
    """A held number whose offer message was not handled for this long is offered by the sweep."""


@dataclass(frozen=True, slots=True)
class EntryView:
    entry: WaitlistEntry
    ahead: int | None
    """WAITING entries before this one in line (None when not waiting)."""


class WaitlistService:
    def __init__(self, deps: WaitlistDeps) -> None:
        self.d = deps
        self.b = deps.bookings

    def _now(self) -> datetime:
        return self.b.d.clock.now()

    # ------------------------------------------------------------------ the resident

    async def join(self, account_id: str, patient_id: str, hospital_code: str, session_id: str) -> WaitlistEntry:
        """Wait for a full session: a verified patient of this account, not already waiting there, who could book
        there if a number were free (APT-002/005/008)."""
        patient = await self.b.d.patients.usable(account_id, patient_id)
        person = patient.person
        now = self._now()
        async with self.d.uow_factory() as uow:
            await uow.bookings.lock_person(person.id)
            hospital = await uow.catalogue.hospital(hospital_code)
            session = await uow.waitlist.session(hospital_code, session_id)
            if hospital is None or session is None or not hospital.active:
                raise WaitlistSessionNotFoundError("no such session")
            refusal = check_join(session, hospital.rules, now)
            if refusal is not None:
                raise refusal
            if any(
                e.session_id == session_id and e.hospital_code == hospital_code and e.live
                for e in (await uow.waitlist.live_of_person(person.id))
            ):
                raise AlreadyWaitingError("already waiting")
            history = await uow.bookings.of_person(person.id, since=now - HISTORY)
            refusal = admit(
                replace(self.b.d.policy, closed_hours=None),  # waiting is no booking rush
                identity=_identity(person),
                person_bookings=history,
                candidate=Candidate(person.id, hospital_code, session.department_code, session.day),
                hospital_rules=hospital.rules,
                now=now,
                forgiven_until=await _forgiven(uow, person.id, history),
            )
            if refusal is not None:
                raise refusal
            entry = new_entry(
                entry_id=new_id(),
                account_id=account_id,
                person_id=person.id,
                patient_id=patient_id,
                session=session,
                at=now,
            )
            await uow.waitlist.add(entry, now=now)
            await uow.commit()
        return entry

    async def entries_of(self, account_id: str, *, limit: int = 50) -> list[EntryView]:
        async with self.d.uow_factory() as uow:
            entries = await uow.waitlist.of_account(account_id, limit=limit)
            return [
                EntryView(e, await uow.waitlist.ahead(e) if e.state is WaitlistState.WAITING else None) for e in entries
            ]

    async def entry_for(self, account_id: str, entry_id: str) -> EntryView:
        async with self.d.uow_factory() as uow:
            entry = await uow.waitlist.get(entry_id)
            if entry is None or entry.account_id != account_id:
                raise WaitlistNotFoundError("no such entry for this account")
            return EntryView(entry, await uow.waitlist.ahead(entry) if entry.state is WaitlistState.WAITING else None)

    async def leave(self, account_id: str, entry_id: str) -> WaitlistEntry:
        """Leave the line; a number offered to the entry passes to the next."""
        await self.entry_for(account_id, entry_id)
        return await self._apply(entry_id, Leave(self._now()))

    async def accept(self, account_id: str, entry_id: str) -> Booking:
        """Book the offered number: a HELD booking with its payment order (PAID for a free slot), the number
        passing from the offer to the booking. The person's checks run again under their lock (APT-005/008);
        a refusal leaves the offer as it is (leaving the line passes it on)."""
        view = await self.entry_for(account_id, entry_id)
        if view.entry.state is WaitlistState.HELD and view.entry.booking_id is not None:
            return await self.b.booking_for(account_id, view.entry.booking_id)  # a repeated accept
        patient = await self.b.d.patients.usable(account_id, view.entry.patient_id)
        person = patient.person
        now = self._now()
        async with self.d.uow_factory() as uow:
            await uow.bookings.lock_person(person.id)
            entry = await uow.waitlist.get(entry_id, lock=True)
            if entry is None:
                raise WaitlistNotFoundError("no such entry")
            if entry.state is not WaitlistState.OFFERED or entry.slot_id is None:
                apply(entry, Accept("", now))  # raises the state's refusal (no offer, lapsed, ended)
                raise WaitlistNotFoundError("no offer")
            hospital = await uow.catalogue.hospital(entry.hospital_code)
            slot = await uow.bookings.offer(entry.hospital_code, entry.slot_id)
            if hospital is None or slot is None:
                raise SlotNotFoundError("the offered slot is gone")
            history = await uow.bookings.of_person(person.id, since=now - HISTORY)
            refusal = admit(
                replace(self.b.d.policy, closed_hours=None),  # an urgent offer may come at night
                identity=_identity(person),
                person_bookings=history,
                candidate=Candidate.at(person.id, slot.hospital_code, slot.department_code, slot.start, replacing=None),
                hospital_rules=hospital.rules,
                now=now,
                forgiven_until=await _forgiven(uow, person.id, history),
            )
            if refusal is not None:
                raise refusal
            accepted, booked = accept(
                entry,
                Hold(
                    booking_id=new_id(),
                    account_id=account_id,
                    person_id=person.id,
                    offer=slot,
                    rules=hospital.rules,
                    at=now,
                    payment_order_id=new_id() if slot.fee_fen else None,
                ),
            )
            booking = booked.booking
            await self.b._in_transaction(uow, booking, booked.effects, hospital=hospital, now=now)
            await uow.bookings.add(booking, now=now)
            if booking.state is BookingState.HELD:
                await self.b._notify(uow, booking, hospital, "booking.held", now=now)
            await uow.waitlist.save(entry, accepted.entry, now=now)
            await uow.commit()
        return booking

    # ------------------------------------------------------------------ freed numbers

    async def keep_for_waitlist(self, uow: Any, hospital_code: str, slot_id: str, *, now: datetime) -> bool:
        """The booking service's hook (``BookingDeps.waitlist``), inside the transaction that frees the number."""
        return await self._keep(uow, hospital_code, slot_id, now=now, reason="released")

    async def _keep(
        self, uow: WaitlistUnitOfWork, hospital_code: str, slot_id: str, *, now: datetime, reason: str
    ) -> bool:
        session_id = await uow.waitlist.waiting_session_of_slot(hospital_code, slot_id)
        if session_id is None:
            return False
        number = HeldNumber(new_id(), hospital_code, session_id, slot_id, now, reason)
        await uow.waitlist.add_number(number)
        await uow.outbox.add(
            OFFER_TOPIC,
            {"numberId": number.id, "hospitalCode": hospital_code, "slotId": slot_id},
            now=now,
            key=f"waitlist:number:{number.id}",
        )
        return True

    async def offer_number(self, number_id: str) -> WaitlistEntry | None:
        """Offer a held number to the first person in line who may have it, or give it back to the pool. Safe to
        run twice: the number's row is taken once."""
        now = self._now()
        released: list[str] = []
        async with self.d.uow_factory() as uow:
            number = await uow.waitlist.take_number(number_id)
            if number is None:
                return None
            entry = await self._offer(uow, number.hospital_code, number.session_id, number.slot_id, now=now)
            if entry is None:
                released.append(await _release(uow, number.hospital_code, number.slot_id))
            await uow.commit()
        await self._tell_gate(released)
        return entry

    async def _offer(
        self, uow: WaitlistUnitOfWork, hospital_code: str, session_id: str, slot_id: str, *, now: datetime
    ) -> WaitlistEntry | None:
        """Offer the number (already counted taken) to the first eligible person in line, claiming their entry;
        None when nobody may have it (or the slot can no longer be booked)."""
        hospital = await uow.catalogue.hospital(hospital_code)
        slot = await uow.bookings.offer(hospital_code, slot_id)
        if hospital is None or slot is None or not hospital.active or not slot.open or slot.session_id != session_id:
            return None
        if booking_window(hospital.rules, slot.start, now) is not None:
            return None
        policy = self.b.d.policy
        bans = policy.bans_at(hospital_code, hospital.rules)
        for entry in in_line(await uow.waitlist.waiting(hospital_code, session_id, limit=self.d.policy.scan)):
            history = await uow.bookings.of_person(entry.person_id, since=now - HISTORY)
            refusal = offer_refusal(
                entry,
                person_bookings=history,
                person_entries=await uow.waitlist.live_of_person(entry.person_id),
                limits=policy.limits,
                bans=bans,
                now=now,
                forgiven_until=await _forgiven(uow, entry.person_id, history),
            )
            if refusal is not None:
                continue  # skipped for this number, still in line
            claimed = await uow.waitlist.claim_waiting(entry.id)
            if claimed is None:
                continue  # left, or being offered another number right now
            outcome = apply(claimed, Offer(slot_id, slot.start, self.d.policy, now))
            offered = outcome.entry
            for effect in outcome.effects:
                if isinstance(effect, NotifyResident):
                    offered = replace(offered, notice_id=await self._notify(uow, offered, hospital, effect.event, now))
            await uow.waitlist.save(claimed, offered, now=now)
            return offered
        return None

    async def close_session(self, hospital_code: str, session_id: str, reason: str = SESSION_STOPPED) -> int:
        """A stopped session (``catalogue.session_stopped``): its line ends, its offered numbers go back to the
        pool (the sweep does the same for sessions found stopped, closed or past)."""
        async with self.d.uow_factory() as uow:
            live = await uow.waitlist.live_in_session(hospital_code, session_id)
        for entry_id in live:
            await self._apply(entry_id, SessionClosed(reason, self._now()))
        return len(live)

    # ------------------------------------------------------------------ deliveries, lapses, the sweep

    async def on_delivered(self, delivery_id: int) -> bool:
        """The notification service sent a delivery: if it is an offer's message, the offer's hold time counts
        from then (the first delivery counts)."""
        async with self.d.uow_factory() as uow:
            found = await uow.waitlist.delivery(delivery_id)
            if found is None or found[1] != OFFERED_EVENT or found[2] is None:
                return False
            entry = await uow.waitlist.by_notice(found[0])
        if entry is None:
            return False
        after = await self._apply(entry.id, Delivered(self.d.policy, found[2]))
        return after.delivered_at == found[2]

    async def sweep(self, *, limit: int = 200) -> dict[str, int]:
        """Record deliveries, lapse offers whose time passed (their numbers pass on), offer numbers whose message
        was lost, close the lines of sessions stopped or over, and offer free numbers of sessions with a line."""
        counts = {"delivered": 0, "lapsed": 0, "offered": 0, "closed": 0}
        async with self.d.uow_factory() as uow:
            delivered = await uow.waitlist.delivered_offers(OFFERED_EVENT, limit=limit)
        for entry_id, at in delivered:
            await self._guarded(self._apply(entry_id, Delivered(self.d.policy, at)), "delivered", counts)
        now = self._now()
        async with self.d.uow_factory() as uow:
            due = await uow.waitlist.offers_due(now=now, limit=limit)
            stuck = await uow.waitlist.pending_numbers(older_than=now - self.d.stuck_after, limit=limit)
            closed = await uow.waitlist.closed_entries(today=to_shanghai(now).date(), limit=limit)
        for entry_id in due:
            await self._guarded(self._apply(entry_id, Lapse(now)), "lapsed", counts)
        for number_id in stuck:
            await self._guarded(self.offer_number(number_id), "offered", counts)
        for entry_id, reason in closed:
            await self._guarded(self._apply(entry_id, SessionClosed(reason, now)), "closed", counts)
        async with self.d.uow_factory() as uow:
            free = await uow.waitlist.free_waited_slots(now=now, limit=limit)
        for hospital_code, session_id, slot_id in free:
            await self._guarded(self._offer_free(hospital_code, session_id, slot_id), "offered", counts)
        return counts

    async def _offer_free(self, hospital_code: str, session_id: str, slot_id: str) -> WaitlistEntry | None:
        """Take a free number of a session with a line and offer it, or leave it free when nobody may have it."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            if not await uow.bookings.take(hospital_code, slot_id):
                return None
            entry = await self._offer(uow, hospital_code, session_id, slot_id, now=now)
            if entry is None:
                return None  # rolled back: the number stays free
            await uow.commit()
        return entry

    async def _guarded(self, step: Any, what: str, counts: dict[str, int]) -> None:
        try:
            result = await step
        except DomainError as exc:
            log.warning("waitlist_sweep_step_failed", extra={"step": what, "code": exc.code})
            return
        if result is not None and result is not False:
            counts[what] += 1

    # ------------------------------------------------------------------ internals

    async def _apply(self, entry_id: str, event: Event) -> WaitlistEntry:
        """One event under the entry's row lock; numbers pass on or go back in the same transaction."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            entry = await uow.waitlist.get(entry_id, lock=True)
            if entry is None:
                raise WaitlistNotFoundError("no such entry")
            outcome = apply(entry, event)
            if not outcome.changed:
                await uow.commit()
                return entry
            released = await self._carry_out(uow, outcome, now=now)
            await uow.waitlist.save(entry, outcome.entry, now=now)
            await uow.commit()
        await self._tell_gate(released)
        return outcome.entry

    async def _carry_out(self, uow: WaitlistUnitOfWork, outcome: Outcome, *, now: datetime) -> list[str]:
        released: list[str] = []
        entry = outcome.entry
        for effect in outcome.effects:
            match effect:
                case PassOn(hospital_code, slot_id):
                    reason = "left" if entry.end_reason == LEFT else "lapsed"
                    if not await self._keep(uow, hospital_code, slot_id, now=now, reason=reason):
                        released.append(await _release(uow, hospital_code, slot_id))
                case ReturnNumber(hospital_code, slot_id):
                    released.append(await _release(uow, hospital_code, slot_id))
                case NotifyResident(event, _):
                    hospital = await uow.catalogue.hospital(entry.hospital_code)
                    if hospital is not None:
                        await self._notify(uow, entry, hospital, event, now)
        return released

    async def _tell_gate(self, released: Sequence[str]) -> None:
        gate = self.b.d.gate
        if gate is not None:
            for key in released:
                await gate.released(key)  # best effort: the periodic rebuild corrects what is missed

    async def _notify(
        self, uow: WaitlistUnitOfWork, entry: WaitlistEntry, hospital: Hospital, event: str, now: datetime
    ) -> str:
        """The resident's message (an outbox message whose id the deliveries carry as ``event_id``)."""
        assert entry.slot_start is not None
        assert entry.offered_at is not None
        if event == OFFERED_EVENT:
            deadline = promised_deadline(self.d.policy, entry.offered_at, entry.slot_start)
        else:
            deadline = entry.offer_expires_at or entry.slot_start
        values = {
            "hospital": hospital.name,
            "time": f"{to_shanghai(entry.slot_start):%Y-%m-%d %H:%M}",
            "deadline": f"{to_shanghai(deadline):%Y-%m-%d %H:%M}",
            "minutes": str(int(self.d.policy.hold.total_seconds() // 60)),
        }
        return await uow.outbox.add(
            event,
            {"accountId": entry.account_id, "values": values, "subject": f"waitlist:{entry.id}"},
            now=now,
            key=f"waitlist:{entry.id}:{event}:{entry.version}",
        )


def _identity(person: Any) -> BookingIdentity:
    return BookingIdentity(
        person_id=person.id,
        verified=person.verified,
        has_document=bool(person.doc_number),
        guardian_verified=person.guardian_person_id is not None,
    )


async def _forgiven(uow: BookingUnitOfWork, person_id: str, history: Sequence[Booking]) -> datetime | None:
    """An operator's lift of a ban (APT-008), read only when the history could ban at all."""
    if not any(b.state in (BookingState.NO_SHOW, BookingState.CANCELLED) for b in history):
        return None
    return await uow.bookings.ban_forgiven_until(person_id)


async def _release(uow: BookingUnitOfWork, hospital_code: str, slot_id: str) -> str:
    """The number back to the pool; its gate key (to tell the gate after the commit)."""
    if not await uow.bookings.release(hospital_code, slot_id):
        log.error("waitlist_release_nothing_taken", extra={"slot": slot_id})
    return slot_key(hospital_code, slot_id)


__all__ = ["OFFER_TOPIC", "EntryView", "WaitlistDeps", "WaitlistService"]
