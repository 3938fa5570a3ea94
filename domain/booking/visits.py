"""Rescheduling, arrival and no-shows (issue: booking, items 4 and 6; DESIGN §5; APT-002, APT-006..010).

* **Rescheduling** (改约) moves a confirmed booking to another slot of the same hospital, department and fee,
  strictly before the cut-off (APT-006), in ONE transaction: the person's row is locked (limits span every
  account and hospital), the limits are checked again with the moved booking left out
  (``Candidate(replacing=...)``, APT-005), the two slots' rows are locked in a fixed order, the new number is
  taken with the conditional update and the old one released (the machine's ``TakeSlot``/``ReleaseSlot``), the
  booking saved, the HIS move and the reminders queued. The Redis gate is asked first, like a hold, and told of
  the take and the release after the commit. At the HIS the move goes through the outbox (``booking.his_move``):
  the new slot is confirmed first (key ``booking:{id}:move:{n}``, so that a retry returns the same
  registration), then the old registration is cancelled; the resident is never left with none. A refusal of the
  new slot for good ends the booking (CONFIRM_FAILED, refunded, an urgent message).
* **Check-in** (签到/取号) is done at the HIS *before* the booking changes: the resident is standing at the
  hospital and the HIS is what calls the numbers, so an answer "签到成功" must mean the HIS knows. The checks
  (the window of APT-010, the person booked of APT-002, the state) run first on the machine without storing;
  then the HIS's ``check_in`` (idempotent key ``booking-checkin:{id}``); then ``CheckedIn`` is stored with its
  card-use report (``healthcard.used`` through the outbox). A HIS that is down answers 503 with a clear message
  and nothing changes; the resident can try again or check in at the counter.
* **The queue** ("N people ahead") is read from the HIS on each request; a HIS that is down answers 503, never
  500.
* **No-shows** (APT-007): the ``booking.no_shows`` beat task marks confirmed bookings whose check-in window has
  closed, one transaction each (a failure is logged and the rest go on); marking twice changes nothing.
* **Bans** (APT-008) are computed from the history by ``rules.ban_until``; an operator may lift one: the lift is
  stored (``booking_ban_lifts``) and audited, and the events up to it stop counting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.booking.errors import IdentityMismatchError, SlotFullError
from domain.booking.gate import slot_key
from domain.booking.machine import (
    CheckedIn,
    CheckInWindowPassed,
    HisMoved,
    HisMoveRefused,
    RescheduleRequested,
    apply,
)
from domain.booking.model import BanLift, Booking, BookingState
from domain.booking.rules import BanRule, BookingPolicy, Candidate, ban_until, check_limits, check_open_hours
from domain.booking.use_cases import (
    HISTORY,
    BookingNotFoundError,
    BookingService,
    BookingUnitOfWork,
    SlotNotFoundError,
)
from domain.catalogue.model import QueuePosition
from domain.catalogue.ports import HisAdapter, HisRejectedError
from domain.catalogue.rules import BookingRules
from domain.kernel.audit import AuditEvent, Outcome
from domain.kernel.errors import ConflictError, DomainError, NotFoundError, UpstreamError
from domain.kernel.ids import new_id

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------- errors


class CheckInUnavailableError(UpstreamError):
    code = "booking.checkin_unavailable"
    message = "医院系统暂时无法连接，签到未完成，请稍后再试或到医院自助机、窗口签到"


class CheckInRefusedError(ConflictError):
    code = "booking.checkin_refused"
    message = "医院未能完成签到，请到医院窗口办理"


class QueueUnavailableError(UpstreamError):
    code = "booking.queue_unavailable"
    message = "暂时无法获取医院排队信息，请稍后再试，并留意医院现场叫号"


class NoQueueError(ConflictError):
    code = "booking.no_queue"
    message = "该预约当前没有排队信息"


class PersonNotFoundError(NotFoundError):
    code = "person.not_found"
    message = "未找到该人员"


class NotBannedError(ConflictError):
    code = "booking.not_banned"
    message = "该就诊人当前未被暂停网上预约"


# ----------------------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Arrival:
    """A check-in's answer: the booking and, when the HIS told, the queue."""

    booking: Booking
    queue: QueuePosition | None


@dataclass(frozen=True, slots=True)
class CurrentBan:
    hospital_code: str | None
    """None: the platform's ban (online booking at every hospital); else one hospital's own rule."""
    until: datetime


@dataclass(frozen=True, slots=True)
class BanReview:
    """What an operator sees of a person's no-shows and bans (masked at the edge)."""

    person_id: str
    person_name: str
    no_shows: tuple[Booking, ...]
    """Within the history read for the checks (``HISTORY``), latest first."""
    forgiven_until: datetime | None
    """The latest lift: no-shows at or before it no longer count."""
    bans: tuple[CurrentBan, ...]
    lifts: tuple[BanLift, ...]


def current_bans(
    policy: BookingPolicy,
    history: Sequence[Booking],
    hospital_rules: Mapping[str, BookingRules],
    now: datetime,
    *,
    person_id: str,
    forgiven_until: datetime | None,
) -> tuple[CurrentBan, ...]:
    """APT-008: the person's suspensions now: the platform's rules (every hospital), then each hospital's own
    rules (``hospital_rules``: the hospitals of the person's history)."""
    found: list[CurrentBan] = []
    platform = [r for r in policy.bans if r.hospital_code is None]
    until = ban_until(history, platform, now, person_id=person_id, hospital_code="", forgiven_until=forgiven_until)
    if until is not None:
        found.append(CurrentBan(None, until))
    for code, rules in sorted(hospital_rules.items()):
        own = [
            *(r for r in policy.bans if r.hospital_code == code),
            *(BanRule.of_hospital(r, code) for r in rules.no_show_rules),
        ]
        until = ban_until(history, own, now, person_id=person_id, hospital_code=code, forgiven_until=forgiven_until)
        if until is not None:
            found.append(CurrentBan(code, until))
    return tuple(found)


# ---------------------------------------------------------------------------------------------------------- service


class VisitService:
    """Built on the booking service (its deps, its ``apply_event`` and its in-transaction effects)."""

    def __init__(self, bookings: BookingService) -> None:
        self.s = bookings
        self.d = bookings.d

    def _now(self) -> datetime:
        return self.d.clock.now()

    # ------------------------------------------------------------------ rescheduling (APT-005, APT-006)

    async def reschedule(self, account_id: str, booking_id: str, slot_id: str) -> Booking:
        """Move a confirmed booking of a person this account manages to ``slot_id`` (same hospital, department
        and fee, before the cut-off). Asking again for the slot the booking is on returns it unchanged."""
        booking = await self.s.booking_for(account_id, booking_id)
        if booking.slot_id == slot_id and booking.state is BookingState.CONFIRMED:
            return booking
        key = slot_key(booking.hospital_code, slot_id)
        gate = self.d.gate
        answer = await gate.admit(key) if gate is not None else None
        if answer is not None and answer.sold_out:
            raise SlotFullError("sold out (gate)")
        try:
            after, released = await self._reschedule(booking.id, slot_id)
        except BaseException:
            if gate is not None and answer is not None:
                await gate.returned(key, answer.ticket)
            raise
        if gate is not None:
            if answer is not None:
                if released is None:
                    await gate.returned(key, answer.ticket)  # a concurrent retry moved it: this request took nothing
                else:
                    await gate.taken(key, answer.ticket)
            for old in released or ():  # a number kept for the waitlist was not released: the gate still counts it
                await gate.released(old)
        return after

    async def _reschedule(self, booking_id: str, slot_id: str) -> tuple[Booking, list[str] | None]:
        """The move in one transaction: the booking after it and the gate keys of the numbers given back (None:
        a concurrent retry had moved it already)."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            found = await uow.bookings.get(booking_id)
            if found is None:
                raise BookingNotFoundError("no such booking")
            await uow.bookings.lock_person(found.person_id)
            booking = await uow.bookings.get(booking_id, lock=True)
            if booking is None:
                raise BookingNotFoundError("no such booking")
            if booking.slot_id == slot_id and booking.state is BookingState.CONFIRMED:
                return booking, None  # a concurrent retry got there first
            hospital = await uow.catalogue.hospital(booking.hospital_code)
            offer = await uow.bookings.offer(booking.hospital_code, slot_id)
            if hospital is None or offer is None or not hospital.active:
                raise SlotNotFoundError("no such slot")
            history = await uow.bookings.of_person(booking.person_id, since=now - HISTORY)
            candidate = Candidate.at(
                booking.person_id, booking.hospital_code, offer.department_code, offer.start, replacing=booking.id
            )
            refusal = check_open_hours(self.d.policy, now) or check_limits(
                history, candidate, self.d.policy.limits, now
            )
            if refusal is not None:
                raise refusal
            outcome = apply(booking, RescheduleRequested(offer, hospital.rules, now))
            await uow.bookings.lock_slots(booking.hospital_code, (booking.slot_id, slot_id))
            released = await self.s._in_transaction(uow, outcome.booking, outcome.effects, hospital=hospital, now=now)
            await uow.bookings.save(booking, outcome.booking, now=now)
            await uow.commit()
        return outcome.booking, released

    async def move_at_his(self, booking_id: str, registration_id: str, to_slot_id: str, move: int) -> None:
        """The outbox's ``booking.his_move``: register on the new slot, record it, then cancel the old
        registration. A move superseded by a later reschedule (or a booking ended meanwhile) is left to the later
        message (or the cancellation), which knows the registration still standing."""
        booking = await self._get(booking_id)
        if booking is None or booking.state is not BookingState.CONFIRMED or booking.slot_id != to_slot_id:
            log.info("booking_move_superseded", extra={"booking": booking_id})
            return
        adapter = self._his(booking.hospital_code)
        patid = await self.d.patients.hospital_patid(booking.person_id, booking.hospital_code)
        try:
            registration = await adapter.confirm(to_slot_id, patid=patid, key=f"booking:{booking.id}:move:{move}")
        except HisRejectedError as exc:
            await self.s.apply_event(booking.id, HisMoveRefused(to_slot_id, exc.code, self._now()))
            return
        moved = await self.s.apply_event(
            booking.id,
            HisMoved(registration_id, registration.registration_id, to_slot_id, self._now(), registration.queue_number),
        )
        if moved.his_registration_id != registration.registration_id:
            return  # superseded while the HIS answered: the later move cancels the old registration
        if registration_id == registration.registration_id:
            return  # the HIS kept the registration and moved it
        try:
            await adapter.cancel(
                registration_id, reason="rescheduled", key=f"booking-move-cancel:{booking.id}:{registration_id}"
            )
        except HisRejectedError as exc:
            log.warning("booking_move_old_registration_gone", extra={"booking": booking.id, "code": exc.code})

    # ------------------------------------------------------------------ arrival (APT-002, APT-010)

    async def check_in(self, account_id: str, booking_id: str, patient_id: str) -> Arrival:
        """签到: ``patient_id`` is the patient presenting (of this account); it must be the person booked
        (APT-002), within the booking's check-in window (APT-010). The HIS checks in first; then the booking."""
        booking = await self.s.booking_for(account_id, booking_id)
        patient = await self.d.patients.usable(account_id, patient_id)
        if booking.state is BookingState.CHECKED_IN:  # a second tap: the same answer
            if patient.person.id != booking.person_id:
                raise IdentityMismatchError("another person presented")
            return Arrival(booking, await self._position_or_none(booking))
        event = CheckedIn(patient.person.id, self._now())
        apply(booking, event)  # every refusal (state, window, person) before anything reaches the HIS
        assert booking.his_registration_id is not None
        try:
            adapter = self._his(booking.hospital_code)
            position = await adapter.check_in(booking.his_registration_id, key=f"booking-checkin:{booking.id}")
        except HisRejectedError as exc:
            raise CheckInRefusedError(f"the HIS refused: {exc.code}") from exc
        except (UpstreamError, NotFoundError) as exc:
            raise CheckInUnavailableError(f"the HIS is unavailable: {exc.code}", retry_after=30) from exc
        except DomainError as exc:
            if exc.code != "his.not_configured":
                raise
            raise CheckInUnavailableError("no HIS gateway", retry_after=30) from exc
        # The HIS knows now: stored as reported by it (no second call; the window was checked above).
        checked = await self.s.apply_event(booking.id, CheckedIn(patient.person.id, self._now(), at_his=True))
        return Arrival(checked, position)

    async def check_in_at_his(self, booking_id: str, hospital_code: str, registration_id: str) -> None:
        """The outbox's ``booking.his_check_in`` (a ``CheckedIn`` stored before the HIS knew): same key as the
        resident's check-in, so the HIS sees one check-in."""
        try:
            await self._his(hospital_code).check_in(registration_id, key=f"booking-checkin:{booking_id}")
        except HisRejectedError as exc:
            log.warning("booking_his_check_in_refused", extra={"booking": booking_id, "code": exc.code})

    async def queue(self, account_id: str, booking_id: str) -> tuple[Booking, QueuePosition]:
        """How many are ahead at the HIS now. 503 (``booking.queue_unavailable``) when the HIS cannot answer."""
        booking = await self.s.booking_for(account_id, booking_id)
        if booking.state not in (BookingState.CONFIRMED, BookingState.CHECKED_IN) or not booking.his_registration_id:
            raise NoQueueError(f"no queue in state {booking.state}")
        try:
            return booking, await self._his(booking.hospital_code).queue_position(booking.his_registration_id)
        except HisRejectedError as exc:
            raise NoQueueError(f"the HIS has no queue for it: {exc.code}") from exc
        except (UpstreamError, NotFoundError) as exc:
            raise QueueUnavailableError(f"the HIS is unavailable: {exc.code}", retry_after=30) from exc
        except DomainError as exc:
            if exc.code != "his.not_configured":
                raise
            raise QueueUnavailableError("no HIS gateway", retry_after=30) from exc

    async def _position_or_none(self, booking: Booking) -> QueuePosition | None:
        if booking.his_registration_id is None:
            return None
        try:
            return await self._his(booking.hospital_code).queue_position(booking.his_registration_id)
        except DomainError as exc:
            log.info("booking_queue_not_read", extra={"booking": booking.id, "code": exc.code})
            return None

    # ------------------------------------------------------------------ no-shows (APT-007)

    async def mark_no_shows(self, *, limit: int = 200) -> dict[str, int]:
        """Confirmed bookings whose check-in window closed become NO_SHOW, each in its own transaction; one that
        fails is logged and the others go on. Idempotent: a no-show is not read again, and marking it twice
        changes nothing."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            due = await uow.bookings.past_check_in(now=now, limit=limit)
        marked = failed = 0
        for booking_id in due:
            try:
                after = await self.s.apply_event(booking_id, CheckInWindowPassed(now))
            except DomainError as exc:
                failed += 1
                log.warning("booking_no_show_failed", extra={"booking": booking_id, "code": exc.code})
                continue
            except Exception:
                failed += 1
                log.exception("booking_no_show_failed", extra={"booking": booking_id})
                continue
            if after.state is BookingState.NO_SHOW:
                marked += 1
        return {"marked": marked, "failed": failed}

    # ------------------------------------------------------------------ bans (APT-008), operators

    async def ban_review(self, staff: str, person_id: str) -> BanReview:
        """A person's no-shows, current bans and lifts, for an operator. Audited (``booking.ban_review``)."""
        name = await self._person_name(person_id)
        now = self._now()
        async with self.d.uow_factory() as uow:
            history = await uow.bookings.of_person(person_id, since=now - HISTORY)
            forgiven = await uow.bookings.ban_forgiven_until(person_id)
            bans = await self._bans(uow, person_id, history, forgiven, now)
            lifts = await uow.bookings.ban_lifts(person_id)
            await uow.audit.record(
                AuditEvent(
                    action="booking.ban_review",
                    outcome=Outcome.SUCCESS,
                    actor=staff,
                    actor_role="operator",
                    object_type="person",
                    object_id=person_id,
                ),
                now=now,
            )
            await uow.commit()
        no_shows = sorted(
            (b for b in history if b.state is BookingState.NO_SHOW), key=lambda b: b.slot_start, reverse=True
        )
        return BanReview(person_id, name, tuple(no_shows), forgiven, bans, tuple(lifts))

    async def lift_ban(self, staff: str, person_id: str, reason: str) -> BanLift:
        """Lift the person's current bans: the no-shows (and counted cancellations) up to now stop counting.
        Refused when no ban is in force (``booking.not_banned``). Audited (``booking.ban_lift``)."""
        now = self._now()
        async with self.d.uow_factory() as uow:
            if not await uow.bookings.lock_person(person_id):
                raise PersonNotFoundError("no such person")
            history = await uow.bookings.of_person(person_id, since=now - HISTORY)
            forgiven = await uow.bookings.ban_forgiven_until(person_id)
            bans = await self._bans(uow, person_id, history, forgiven, now)
            if not bans:
                raise NotBannedError("no ban in force")
            lift = BanLift(new_id(), person_id, covers_until=now, lifted_at=now, actor=staff, reason=reason[:200])
            await uow.bookings.add_ban_lift(lift)
            await uow.audit.record(
                AuditEvent(
                    action="booking.ban_lift",
                    outcome=Outcome.SUCCESS,
                    actor=staff,
                    actor_role="operator",
                    object_type="person",
                    object_id=person_id,
                    reason=lift.reason,
                    details={
                        "lift": lift.id,
                        "bans": ",".join(f"{b.hospital_code or '*'}<{b.until.isoformat()}" for b in bans),
                    },
                ),
                now=now,
            )
            await uow.commit()
        return lift

    async def _bans(
        self,
        uow: BookingUnitOfWork,
        person_id: str,
        history: Sequence[Booking],
        forgiven: datetime | None,
        now: datetime,
    ) -> tuple[CurrentBan, ...]:
        rules: dict[str, BookingRules] = {}
        for code in sorted({b.hospital_code for b in history}):
            hospital = await uow.catalogue.hospital(code)
            if hospital is not None:
                rules[code] = hospital.rules
        return current_bans(self.d.policy, history, rules, now, person_id=person_id, forgiven_until=forgiven)

    async def _person_name(self, person_id: str) -> str:
        async with self.d.patients.d.uow_factory() as uow:
            person = await uow.patients.person(person_id)
        if person is None:
            raise PersonNotFoundError("no such person")
        return person.name

    # ------------------------------------------------------------------ internals

    async def _get(self, booking_id: str) -> Booking | None:
        async with self.d.uow_factory() as uow:
            return await uow.bookings.get(booking_id)

    def _his(self, hospital_code: str) -> HisAdapter:
        if self.d.his is None:
            raise DomainError("no HIS gateway", code="his.not_configured")
        return self.d.his.for_hospital(hospital_code)
