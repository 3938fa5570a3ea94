"""The waitlist (候补) of a full session, as pure rules and a transition table (DESIGN §5, issue: booking item 5).

A resident waits for a session whose numbers are all taken. When one of its numbers comes free (a cancellation,
an unpaid hold that expired, an offer that lapsed: ``machine.ReleaseSlot(offer_waitlist=True)``; never a stopped
session), the number is not given back to the pool: it stays taken and is *offered* to the first person in line
who may still book there, who is told at once (an urgent message, sent even in quiet hours). The offer holds the
number for ``OfferPolicy.hold`` (30 minutes by default) counted from when the message was delivered; accepting it
turns it into a normal booking, HELD with its payment order (the number passes from the offer to the booking, it
is not taken twice); if the time passes unused the offer lapses and the number goes to the next in line (or back
to the pool when no one else may have it).

    WAITING   offer          -> OFFERED     a number of the session is held for the entry; the resident is told
    OFFERED   delivered      -> OFFERED     the hold time now counts from the delivery (never later than before)
    OFFERED   accept         -> HELD        (before the deadline) the booking takes over the number
    OFFERED   time passed    -> LAPSED      the number passes on
    WAITING   leave          -> CANCELLED
    OFFERED   leave          -> CANCELLED   the number passes on
    WAITING   session closed -> CANCELLED   (stopped, over)
    OFFERED   session closed -> CANCELLED   the number goes back to the pool

**When the hold time starts.** The notification service records when it handed the offer's message to a channel
(``notification_deliveries.sent_at``); that moment starts the clock. A message that is never delivered (no
reachable channel, refused for good) must not hold a number for ever, so the clock starts at the latest
``delivery_grace`` (10 minutes) after the offer was made::

    deadline = min(min(delivered_at, offered_at + delivery_grace) + hold, slot_start)

Until the delivery is known the deadline shown is the latest one (``offered_at + delivery_grace + hold``); a
delivery only ever moves it earlier. The message itself shows ``offered_at + hold``: never later than the real
deadline.

**Who is next.** Entries are in line by the time they joined (``created_at``, then the id). A freed number goes to
the first WAITING entry whose person may still book there now (``offer_refusal``): no ban (APT-008) and within
APT-005's limits, counting the numbers offered to the person elsewhere in the same department and day. A person
skipped stays WAITING for the next number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from domain.booking.errors import DepartmentDayLimitError, SessionNotOpenError
from domain.booking.machine import Hold, Priority, TakeSlot
from domain.booking.machine import Outcome as BookingOutcome
from domain.booking.machine import hold as hold_booking
from domain.booking.model import Booking
from domain.booking.rules import BanRule, Candidate, PersonLimits, check_bans, check_limits, check_window
from domain.booking.slots import SlotStock, release
from domain.catalogue.model import SessionStatus
from domain.catalogue.rules import BookingRules
from domain.kernel.errors import ConflictError, DomainError, NotFoundError

OFFERED_EVENT = "booking.waitlist_offered"
"""The resident's message (and notification template) of an offer: urgent, with the deadline."""
LAPSED_EVENT = "booking.waitlist_lapsed"
"""The resident's message when an offer lapsed unused."""

# -------------------------------------------------------------------------------------------------------------- errors


class WaitlistNotFoundError(NotFoundError):
    code = "waitlist.not_found"
    message = "候补记录不存在"


class WaitlistSessionNotFoundError(NotFoundError):
    code = "waitlist.session_not_found"
    message = "出诊不存在或已下架"


class SessionNotFullError(ConflictError):
    code = "waitlist.session_not_full"
    message = "该出诊尚有可预约号源，请直接预约"


class SessionOverError(ConflictError):
    code = "waitlist.session_over"
    message = "该出诊已开始或已结束，无法候补"


class AlreadyWaitingError(ConflictError):
    code = "waitlist.already_waiting"
    message = "该就诊人已在此出诊的候补队列中"


class NoOfferError(ConflictError):
    code = "waitlist.no_offer"
    message = "暂无为您保留的号源，请耐心等待"


class OfferLapsedError(ConflictError):
    code = "waitlist.offer_lapsed"
    message = "号源保留时间已过，已顺延给下一位候补者"


class OfferNotLapsedError(ConflictError):
    code = "waitlist.offer_not_lapsed"
    message = "号源仍在保留期内"


class WaitlistEndedError(ConflictError):
    code = "waitlist.ended"
    message = "该候补已结束"


class IllegalWaitlistTransitionError(ConflictError):
    code = "waitlist.illegal_transition"
    message = "候补状态已变化，请刷新后重试"


class OfferMismatchError(ConflictError):
    code = "waitlist.offer_mismatch"
    message = "号源信息已变化，请刷新后重试"


# --------------------------------------------------------------------------------------------------------------- model


class WaitlistState(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    """A number of the session is held for the entry until ``offer_expires_at``."""
    HELD = "held"
    """Accepted: the booking ``booking_id`` (HELD with its payment order) took the number over."""
    LAPSED = "lapsed"
    """The offer's time passed unused: the number went to the next in line."""
    CANCELLED = "cancelled"
    """The resident left the list, or the session was stopped or is over (``end_reason``)."""


LIVE = frozenset({WaitlistState.WAITING, WaitlistState.OFFERED})
"""In line: one live entry per person and session (a unique index backs it)."""
TERMINAL = frozenset({WaitlistState.HELD, WaitlistState.LAPSED, WaitlistState.CANCELLED})

LEFT = "resident"
SESSION_STOPPED = "session_stopped"
SESSION_OVER = "session_over"


@dataclass(frozen=True, slots=True)
class OfferPolicy:
    """Platform settings of the waitlist (``HSP_BOOKING__WAITLIST_*``)."""

    hold: timedelta = timedelta(minutes=30)
    """How long an offer holds its number, counted from the delivery of its message."""
    delivery_grace: timedelta = timedelta(minutes=10)
    """The clock starts at the latest this long after the offer, delivered or not."""
    scan: int = 200
    """How many waiting entries of a session one offer looks at (in line order) for someone eligible."""

    def __post_init__(self) -> None:
        if self.hold <= timedelta(0) or self.delivery_grace < timedelta(0) or self.scan < 1:
            raise ValueError("the waitlist's hold must be positive, its grace not negative, its scan at least 1")


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    id: str
    account_id: str
    """The account that joined: the one that is told, and may accept or leave."""
    person_id: str
    patient_id: str
    """The account's patient (就诊人) link, used again to book on acceptance."""
    hospital_code: str
    department_code: str
    session_id: str
    visit_day: date
    created_at: datetime
    """The place in line: earlier first (then the id)."""
    state: WaitlistState = WaitlistState.WAITING
    slot_id: str | None = None
    """The slot of the number offered (set from the offer on)."""
    slot_start: datetime | None = None
    offered_at: datetime | None = None
    delivered_at: datetime | None = None
    """When the offer's message was first delivered (the notification service's ``sent_at``)."""
    offer_expires_at: datetime | None = None
    notice_id: str | None = None
    """The outbox message id of the offer's message (the notification deliveries' ``event_id``)."""
    booking_id: str | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    version: int = 0

    @property
    def line_key(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def holds_number(self) -> bool:
        """An offered entry holds one number of its slot (counted in ``clinic_slots.taken``)."""
        return self.state is WaitlistState.OFFERED


@dataclass(frozen=True, slots=True)
class HeldNumber:
    """A freed number of a session with people waiting, kept taken for them until it is offered to the next in
    line (``waitlist_numbers``; each row counts once in ``clinic_slots.taken``)."""

    id: str
    hospital_code: str
    session_id: str
    slot_id: str
    created_at: datetime
    reason: str
    """What freed it: ``released`` (a booking gave it back), ``lapsed`` or ``left`` (an offer passed on)."""


def offer_deadline(
    policy: OfferPolicy, offered_at: datetime, delivered_at: datetime | None, slot_start: datetime
) -> datetime:
    """When an offer lapses: ``hold`` from the delivery of its message, the delivery counted at the latest
    ``delivery_grace`` after the offer, and never after the slot starts."""
    latest_start = offered_at + policy.delivery_grace
    starts = latest_start if delivered_at is None else min(max(delivered_at, offered_at), latest_start)
    return min(starts + policy.hold, slot_start)


def promised_deadline(policy: OfferPolicy, offered_at: datetime, slot_start: datetime) -> datetime:
    """The deadline the offer's message shows: as if delivered at once (never later than the real one)."""
    return min(offered_at + policy.hold, slot_start)


# -------------------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Offer:
    """A number of ``slot_id`` is held for the entry (taken from the pool or passed on from another entry)."""

    slot_id: str
    slot_start: datetime
    policy: OfferPolicy
    at: datetime


@dataclass(frozen=True, slots=True)
class Delivered:
    """The offer's message reached the resident at ``at`` (the first delivery counts)."""

    policy: OfferPolicy
    at: datetime


@dataclass(frozen=True, slots=True)
class Accept:
    booking_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Lapse:
    at: datetime


@dataclass(frozen=True, slots=True)
class Leave:
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session was stopped (停诊) or is over: no number of it will be offered any more."""

    reason: str
    at: datetime


Event = Offer | Delivered | Accept | Lapse | Leave | SessionClosed

# ------------------------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class PassOn:
    """The entry's number stays taken and goes to the next in line of its session (back to the pool when no one
    else may have it)."""

    hospital_code: str
    slot_id: str


@dataclass(frozen=True, slots=True)
class ReturnNumber:
    """The entry's number goes back to the pool (its session is stopped or over)."""

    hospital_code: str
    slot_id: str


@dataclass(frozen=True, slots=True)
class NotifyResident:
    event: str
    priority: Priority


Effect = PassOn | ReturnNumber | NotifyResident


@dataclass(frozen=True, slots=True)
class Outcome:
    entry: WaitlistEntry
    effects: tuple[Effect, ...] = field(default_factory=tuple)
    changed: bool = True


# ----------------------------------------------------------------------------------------------------------- the table


def apply(entry: WaitlistEntry, event: Event) -> Outcome:
    """The next entry and the effects to carry out. Repeated events change nothing; impossible ones raise a
    ConflictError with a stable code."""
    result = _apply(entry, event)
    if result.changed:
        return Outcome(replace(result.entry, version=entry.version + 1), result.effects, True)
    return result


def _unchanged(entry: WaitlistEntry) -> Outcome:
    return Outcome(entry, (), changed=False)


def _end(entry: WaitlistEntry, state: WaitlistState, at: datetime, reason: str) -> WaitlistEntry:
    return replace(entry, state=state, ended_at=at, end_reason=reason)


def _number(entry: WaitlistEntry) -> tuple[str, str]:
    assert entry.slot_id is not None
    return entry.hospital_code, entry.slot_id


def _apply(entry: WaitlistEntry, event: Event) -> Outcome:
    state = entry.state
    match event:
        case Offer(slot_id, slot_start, policy, at):
            if state is not WaitlistState.WAITING:
                raise IllegalWaitlistTransitionError(f"offer in {state}")
            if at >= slot_start:
                raise SessionOverError("the slot has started")
            offered = replace(
                entry,
                state=WaitlistState.OFFERED,
                slot_id=slot_id,
                slot_start=slot_start,
                offered_at=at,
                delivered_at=None,
                offer_expires_at=offer_deadline(policy, at, None, slot_start),
            )
            return Outcome(offered, (NotifyResident(OFFERED_EVENT, Priority.URGENT),))

        case Delivered(policy, at):
            if state is not WaitlistState.OFFERED or entry.delivered_at is not None:
                return _unchanged(entry)  # a late or repeated report
            assert entry.offered_at is not None
            assert entry.slot_start is not None
            assert entry.offer_expires_at is not None
            deadline = offer_deadline(policy, entry.offered_at, at, entry.slot_start)
            return Outcome(
                replace(entry, delivered_at=at, offer_expires_at=min(entry.offer_expires_at, deadline)),
            )

        case Accept(booking_id, at):
            if state is WaitlistState.HELD and entry.booking_id == booking_id:
                return _unchanged(entry)
            if state is WaitlistState.WAITING:
                raise NoOfferError("nothing offered yet")
            if state is WaitlistState.LAPSED:
                raise OfferLapsedError("lapsed")
            if state is not WaitlistState.OFFERED:
                raise WaitlistEndedError(f"entry is {state}")
            assert entry.offer_expires_at is not None
            if at >= entry.offer_expires_at:
                raise OfferLapsedError(f"lapsed at {entry.offer_expires_at}")
            return Outcome(_end(replace(entry, booking_id=booking_id), WaitlistState.HELD, at, "accepted"))

        case Lapse(at):
            if state is WaitlistState.LAPSED:
                return _unchanged(entry)
            if state is not WaitlistState.OFFERED:
                raise IllegalWaitlistTransitionError(f"lapse in {state}")
            assert entry.offer_expires_at is not None
            if at < entry.offer_expires_at:
                raise OfferNotLapsedError(f"held until {entry.offer_expires_at}")
            return Outcome(
                _end(entry, WaitlistState.LAPSED, at, "lapsed"),
                (PassOn(*_number(entry)), NotifyResident(LAPSED_EVENT, Priority.TRANSACTIONAL)),
            )

        case Leave(at):
            if state is WaitlistState.CANCELLED:
                return _unchanged(entry)
            if state is WaitlistState.WAITING:
                return Outcome(_end(entry, WaitlistState.CANCELLED, at, LEFT))
            if state is WaitlistState.OFFERED:
                return Outcome(_end(entry, WaitlistState.CANCELLED, at, LEFT), (PassOn(*_number(entry)),))
            raise WaitlistEndedError(f"entry is {state}")

        case SessionClosed(reason, at):
            if state is WaitlistState.WAITING:
                return Outcome(_end(entry, WaitlistState.CANCELLED, at, reason))
            if state is WaitlistState.OFFERED:
                return Outcome(_end(entry, WaitlistState.CANCELLED, at, reason), (ReturnNumber(*_number(entry)),))
            return _unchanged(entry)
    raise IllegalWaitlistTransitionError(f"unknown event {type(event).__name__}")


# ------------------------------------------------------------------------------------------------------- joining


@dataclass(frozen=True, slots=True)
class WaitedSlot:
    stock: SlotStock
    start: datetime


@dataclass(frozen=True, slots=True)
class WaitedSession:
    """A session as the waitlist sees it: where, when, and its slots' stock as read now."""

    hospital_code: str
    session_id: str
    department_code: str
    day: date
    status: SessionStatus
    slots: tuple[WaitedSlot, ...]


def check_join(session: WaitedSession, rules: BookingRules, now: datetime) -> DomainError | None:
    """One may wait only for an open session, before its last slot starts, within the booking window (APT-004),
    and only when none of its slots still to come has a number left (else: book it)."""
    if session.status is not SessionStatus.OPEN:
        return SessionNotOpenError(f"session {session.session_id} is {session.status}")
    ahead = [s for s in session.slots if s.start > now]
    if not ahead:
        return SessionOverError("no slot left to come")
    refusal = check_window(rules, max(s.start for s in ahead), now)
    if refusal is not None:
        return refusal
    if any(s.stock.free > 0 for s in ahead):
        return SessionNotFullError("numbers left")
    return None


def new_entry(
    *,
    entry_id: str,
    account_id: str,
    person_id: str,
    patient_id: str,
    session: WaitedSession,
    at: datetime,
) -> WaitlistEntry:
    return WaitlistEntry(
        id=entry_id,
        account_id=account_id,
        person_id=person_id,
        patient_id=patient_id,
        hospital_code=session.hospital_code,
        department_code=session.department_code,
        session_id=session.session_id,
        visit_day=session.day,
        created_at=at,
    )


# ---------------------------------------------------------------------------------------------------- who is next


def candidate_of(entry: WaitlistEntry) -> Candidate:
    return Candidate(entry.person_id, entry.hospital_code, entry.department_code, entry.visit_day)


def offer_refusal(
    entry: WaitlistEntry,
    *,
    person_bookings: Iterable[Booking],
    person_entries: Iterable[WaitlistEntry],
    limits: PersonLimits,
    bans: Iterable[BanRule],
    now: datetime,
    forgiven_until: datetime | None = None,
) -> DomainError | None:
    """Why the person cannot be offered a number of the entry's session now, or None: a ban (APT-008), a limit
    of APT-005 (a booking already held in that department that day skips the person), or a number already
    offered to the person in that department and day that, with their bookings there, fills the limit."""
    bookings = list(person_bookings)
    candidate = candidate_of(entry)
    refusal = check_bans(
        bookings,
        bans,
        now,
        person_id=entry.person_id,
        hospital_code=entry.hospital_code,
        forgiven_until=forgiven_until,
    ) or check_limits(bookings, candidate, limits, now)
    if refusal is not None:
        return refusal
    there = (entry.hospital_code, entry.department_code, entry.visit_day)
    offered = sum(
        1
        for e in person_entries
        if e.id != entry.id
        and e.person_id == entry.person_id
        and e.state is WaitlistState.OFFERED
        and (e.hospital_code, e.department_code, e.visit_day) == there
    )
    if offered:
        booked = sum(
            1
            for b in bookings
            if b.person_id == entry.person_id
            and b.live_at(now)
            and (b.hospital_code, b.department_code, b.visit_day) == there
        )
        if offered + booked + 1 > limits.per_department_day:
            return DepartmentDayLimitError.refusal("a number offered there already", limit=limits.per_department_day)
    return None


def in_line(entries: Iterable[WaitlistEntry]) -> list[WaitlistEntry]:
    """The WAITING entries in line order."""
    return sorted((e for e in entries if e.state is WaitlistState.WAITING), key=lambda e: e.line_key)


def next_in_line(
    entries: Iterable[WaitlistEntry], refusal: Callable[[WaitlistEntry], DomainError | None]
) -> WaitlistEntry | None:
    """The first WAITING entry (in line order) its person may be offered a number of, or None."""
    return next((e for e in in_line(entries) if refusal(e) is None), None)


# ---------------------------------------------------------------------------------------------------- accepting


def accept(entry: WaitlistEntry, event: Hold) -> tuple[Outcome, BookingOutcome]:
    """The offered person books the offered number: the entry is HELD and the booking is a normal hold (HELD with
    its payment order, or PAID for a free slot) whose number is the one the offer held, so it is not taken
    again (no ``TakeSlot``). ``event.offer`` is the slot as read now: its stock counts the offered number as
    taken, and this person's."""
    accepted = apply(entry, Accept(event.booking_id, event.at))
    if (
        event.person_id != entry.person_id
        or event.offer.hospital_code != entry.hospital_code
        or event.offer.slot_id != entry.slot_id
    ):
        raise OfferMismatchError("the booking is not of the offered number")
    mine = replace(event.offer, stock=release(event.offer.stock))  # the held number is free for its holder
    booked = hold_booking(replace(event, offer=mine))
    effects = tuple(e for e in booked.effects if not isinstance(e, TakeSlot))
    return accepted, BookingOutcome(booked.booking, effects)


# --------------------------------------------------------------------------------------------- the booking's hook


class WaitlistHook(Protocol):
    """What the booking service asks when a booking gives a number back with ``offer_waitlist``."""

    async def keep_for_waitlist(self, uow: Any, hospital_code: str, slot_id: str, *, now: datetime) -> bool:
        """In the releasing transaction: True when the number stays taken for the slot's session's waitlist (it
        is offered through the outbox), False when it should go back to the pool."""
        ...
