"""Booking rules as configuration (domain-rules §4, APT-002..010). None of the numbers is law [C]: each is a
default a deployment or a hospital may change.

Per hospital (APT-004 window and release time, APT-006 cancellation cut-off, APT-009 payment deadline, APT-010
check-in window, APT-008 the hospital's own no-show table) the rules are ``domain.catalogue.rules.BookingRules``,
kept on each ``Hospital`` and edited by operators; this module reads them. Platform-wide (APT-002/003 real name,
APT-005 per-person limits, APT-008 bans across hospitals, APT-010 nightly closed hours) they are
``BookingPolicy`` below.

Every check is a pure function that *returns* the refusal (an error with a stable code and a Chinese message)
or None, so that a use case can run them in order and raise the first.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from domain.booking.errors import (
    BannedError,
    BookingClosedHoursError,
    DayLimitError,
    DepartmentDayLimitError,
    DocumentRequiredError,
    GuardianRequiredError,
    LimitExceededError,
    LongWindowLimitError,
    NotOpenYetError,
    OutsideWindowError,
    RealNameRequiredError,
    SameDayNotAllowedError,
    ShortWindowLimitError,
    SlotPastError,
)
from domain.booking.model import Booking, BookingState, Deadlines
from domain.catalogue.rules import BookingRules, NoShowRule
from domain.kernel.clock import SHANGHAI, to_shanghai
from domain.kernel.errors import DomainError

LimitRefusal = LimitExceededError
"""What ``check_limits`` returns: one subclass per rule of APT-005, each with its own code."""

# -------------------------------------------------------------------------------------------------------- per hospital


def check_window(rules: BookingRules, slot_start: datetime, now: datetime) -> OutsideWindowError | None:
    """APT-004: slots of day D open at ``release_time`` on D − ``window_days`` (from that instant on);
    the same day only where ``allow_same_day``; never a slot that has started."""
    if slot_start <= now:
        return SlotPastError("the slot has started")
    day = to_shanghai(slot_start).date()
    if day == to_shanghai(now).date() and not rules.allow_same_day:
        return SameDayNotAllowedError("no same-day booking at this hospital")
    opens = rules.opens_at(day)
    if now < opens:
        local = to_shanghai(opens)
        return NotOpenYetError(
            "not released yet",
            message=f"该日号源将于{local:%m月%d日 %H:%M}开放预约",
            extra={"opensAt": opens.isoformat()},
        )
    return None


def deadlines(rules: BookingRules, slot_start: datetime, now: datetime, *, free: bool) -> Deadlines:
    """The moments of a booking taken ``now`` (APT-006, APT-009, APT-010)."""
    hold = None if free else min(now + timedelta(minutes=rules.payment_minutes), slot_start)
    return Deadlines(
        hold_expires_at=hold,
        cancel_deadline=rules.cancel_deadline(slot_start),
        checkin_opens_at=slot_start - timedelta(minutes=rules.checkin_before_minutes),
        checkin_closes_at=slot_start + timedelta(minutes=rules.checkin_after_minutes),
    )


# --------------------------------------------------------------------------------------------- real name (APT-002/003)


class IdentityMode(StrEnum):
    """APT-003: how a child without an ID document is booked."""

    OWN_DOCUMENT = "own_document"
    """With the child's own ID or household register (户口簿), never the guardian's identity."""
    GUARDIAN = "guardian"
    """With the accompanying guardian's real name and ID (the child's name, sex and birth date are kept)."""


@dataclass(frozen=True, slots=True)
class BookingIdentity:
    """What the booking needs to know of the person's real-name status (from ``domain.patient``)."""

    person_id: str
    verified: bool
    """APT-002: name and document matched (or, for a child without one, vouched for by a verified guardian)."""
    has_document: bool
    """An ID type and number are on file for the person themself."""
    guardian_verified: bool = False
    """A verified guardian is linked (ID-020)."""


def check_real_name(identity: BookingIdentity, mode: IdentityMode) -> RealNameRequiredError | None:
    """APT-002: booking only for a verified real-name person; APT-003: a child without a document only where the
    hospital books with the guardian's identity, and then only with a verified guardian."""
    if not identity.verified:
        return RealNameRequiredError("person not verified")
    if identity.has_document:
        return None
    if mode is IdentityMode.OWN_DOCUMENT:
        return DocumentRequiredError("the hospital books with the person's own document")
    if not identity.guardian_verified:
        return GuardianRequiredError("no verified guardian")
    return None


# ---------------------------------------------------------------------------------------------------- limits (APT-005)


class LimitBasis(StrEnum):
    VISIT_DAY = "visit_day"
    """The windows count bookings by visit day: any run of N consecutive days holds at most the limit."""
    BOOKED_AT = "booked_at"
    """The windows count bookings by when they were made: the last N days before now."""


@dataclass(frozen=True, slots=True)
class PersonLimits:
    """APT-005 (Beijing unified platform FAQ [S]): counted per real-name person across every account and every
    hospital; bookings that hold a number count (held, paid, confirmed, checked in, completed, no-show)."""

    per_department_day: int = 1
    """APT-005: bookings per visit day in one department of one hospital."""
    per_day: int = 2
    """APT-005: bookings per visit day overall."""
    short_window_days: int = 7
    """APT-005: the length of the short window, in days ..."""
    short_window_max: int = 3
    """APT-005: ... and the bookings it may hold."""
    long_window_months: int = 3
    """APT-005: the length of the long window, in calendar months ..."""
    long_window_max: int = 5
    """APT-005: ... and the bookings it may hold."""
    basis: LimitBasis = LimitBasis.VISIT_DAY
    """APT-005 does not say whether "7 日内" counts visit days or booking days; visit days by default."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """The booking about to be made (or the new slot of a reschedule, ``replacing`` the booking moved)."""

    person_id: str
    hospital_code: str
    department_code: str
    visit_day: date
    replacing: str | None = None

    @classmethod
    def at(
        cls, person_id: str, hospital_code: str, department_code: str, slot_start: datetime, *, replacing: str | None
    ) -> Candidate:
        return cls(person_id, hospital_code, department_code, to_shanghai(slot_start).date(), replacing)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (or earlier), clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _windows(day: date, *, days: int = 0, months: int = 0) -> Iterator[tuple[date, date]]:
    """Every window [start, end) of the given length that contains ``day``."""
    reach = days if days else 31 * months + 1
    for back in range(reach):
        start = day - timedelta(days=back)
        end = start + timedelta(days=days) if days else add_months(start, months)
        if start <= day < end:
            yield start, end


def _most_in_a_window(visit_days: Sequence[date], day: date, *, days: int = 0, months: int = 0) -> int:
    return max(
        (sum(1 for d in visit_days if start <= d < end) for start, end in _windows(day, days=days, months=months)),
        default=0,
    )


def counted(
    person_bookings: Iterable[Booking], person_id: str, now: datetime, *, replacing: str | None = None
) -> list[Booking]:
    """The person's bookings that count towards the limits now: those holding a number (an expired hold not yet
    swept does not), the booking being moved excluded. Bookings of other persons never count, whichever account
    made them, and every account's bookings of this person do."""
    return [b for b in person_bookings if b.person_id == person_id and b.id != replacing and b.live_at(now)]


def check_limits(
    person_bookings: Iterable[Booking], candidate: Candidate, rules: PersonLimits, now: datetime
) -> LimitRefusal | None:
    """APT-005: the first limit the candidate would break, or None. The candidate itself counts as one."""
    mine = counted(person_bookings, candidate.person_id, now, replacing=candidate.replacing)
    same_department = [
        b
        for b in mine
        if b.visit_day == candidate.visit_day
        and b.hospital_code == candidate.hospital_code
        and b.department_code == candidate.department_code
    ]
    if len(same_department) + 1 > rules.per_department_day:
        return DepartmentDayLimitError.refusal("department-day limit", limit=rules.per_department_day)
    if sum(1 for b in mine if b.visit_day == candidate.visit_day) + 1 > rules.per_day:
        return DayLimitError.refusal("day limit", limit=rules.per_day)
    if rules.basis is LimitBasis.VISIT_DAY:
        visit_days = [b.visit_day for b in mine]
        short = _most_in_a_window(visit_days, candidate.visit_day, days=rules.short_window_days)
        long = _most_in_a_window(visit_days, candidate.visit_day, months=rules.long_window_months)
    else:
        local_now = to_shanghai(now)
        short_since = local_now - timedelta(days=rules.short_window_days)
        long_day = add_months(local_now.date(), -rules.long_window_months)
        long_since = datetime.combine(long_day, local_now.timetz())
        short = sum(1 for b in mine if b.created_at > short_since)
        long = sum(1 for b in mine if b.created_at > long_since)
    if short + 1 > rules.short_window_max:
        return ShortWindowLimitError.refusal(
            "short-window limit", days=rules.short_window_days, limit=rules.short_window_max
        )
    if long + 1 > rules.long_window_max:
        return LongWindowLimitError.refusal(
            "long-window limit", months=rules.long_window_months, limit=rules.long_window_max
        )
    return None


# -------------------------------------------------------------------------------------------------- bans (APT-007/008)


class BanEvent(StrEnum):
    NO_SHOW = "no_show"
    """APT-007: booked, not cancelled before the cut-off, not checked in within the window (a stopped session
    is never one)."""
    CANCELLATION = "cancellation"
    """A cancellation by the resident (some hospitals ban after 3 a month, APT-008)."""


class WindowKind(StrEnum):
    ROLLING = "rolling"
    """The last ``window_days`` up to the event."""
    CALENDAR_YEAR = "calendar_year"
    CALENDAR_MONTH = "calendar_month"


@dataclass(frozen=True, slots=True)
class BanRule:
    """APT-008 as one row of a rule table: the ``count``-th event within the window suspends *online* booking for
    ``ban_days`` from that event, each further event in the same window ``escalation_days`` longer
    (the 114 hospital: count 1 per calendar year, 30 days, +30 each)."""

    event: BanEvent = BanEvent.NO_SHOW
    count: int = 3
    window_days: int = 90
    """For a rolling window."""
    window_kind: WindowKind = WindowKind.ROLLING
    ban_days: int = 90
    escalation_days: int = 0
    hospital_code: str | None = None
    """None: events at every hospital count and the ban applies at every hospital (the unified platform);
    otherwise only this hospital's events, and only booking at this hospital is suspended."""

    @classmethod
    def of_hospital(cls, rule: NoShowRule, hospital_code: str) -> BanRule:
        """A hospital's own row (``Hospital.rules.no_show_rules``), limited to that hospital."""
        return cls(
            event=BanEvent(rule.event),
            count=rule.count,
            window_days=rule.window_days,
            ban_days=rule.ban_days,
            hospital_code=hospital_code,
        )


def _event_time(booking: Booking, event: BanEvent) -> datetime | None:
    if event is BanEvent.NO_SHOW and booking.state is BookingState.NO_SHOW:
        return booking.slot_start
    if (
        event is BanEvent.CANCELLATION
        and booking.state is BookingState.CANCELLED
        and booking.end_reason == CANCELLED_BY_RESIDENT
    ):
        return booking.ended_at
    return None


CANCELLED_BY_RESIDENT = "resident"


def _in_window(rule: BanRule, earlier: datetime, at: datetime) -> bool:
    if earlier > at:
        return False
    if rule.window_kind is WindowKind.ROLLING:
        return at - earlier < timedelta(days=rule.window_days)
    a, b = to_shanghai(earlier), to_shanghai(at)
    if rule.window_kind is WindowKind.CALENDAR_YEAR:
        return a.year == b.year
    return (a.year, a.month) == (b.year, b.month)


def ban_until(
    person_bookings: Iterable[Booking],
    rules: Iterable[BanRule],
    now: datetime,
    *,
    person_id: str,
    hospital_code: str,
    forgiven_until: datetime | None = None,
) -> datetime | None:
    """APT-008: when the person's suspension of online booking at this hospital ends, or None if not suspended.
    Derived from the booking history alone, so nothing is stored that could drift from it, except an operator's
    lift of a ban: events at or before ``forgiven_until`` (the latest lift) no longer count."""
    history = [b for b in person_bookings if b.person_id == person_id]
    until: datetime | None = None
    for rule in rules:
        if rule.hospital_code not in (None, hospital_code):
            continue
        times = sorted(
            t
            for b in history
            if rule.hospital_code in (None, b.hospital_code)
            for t in (_event_time(b, rule.event),)
            if t is not None and (forgiven_until is None or t > forgiven_until)
        )
        for at in times:
            if at > now:
                continue
            n = sum(1 for earlier in times if _in_window(rule, earlier, at))
            if n < rule.count:
                continue
            end = at + timedelta(days=rule.ban_days + (n - rule.count) * rule.escalation_days)
            if now < end and (until is None or end > until):
                until = end
    return until


def check_bans(
    person_bookings: Iterable[Booking],
    rules: Iterable[BanRule],
    now: datetime,
    *,
    person_id: str,
    hospital_code: str,
    online: bool = True,
    forgiven_until: datetime | None = None,
) -> BannedError | None:
    """APT-008: bans apply to online booking only; on-site registration stays available. An operator's lift
    forgives the events up to ``forgiven_until``."""
    if not online:
        return None
    until = ban_until(
        person_bookings, rules, now, person_id=person_id, hospital_code=hospital_code, forgiven_until=forgiven_until
    )
    return None if until is None else BannedError.until(until, "online booking suspended")


# ------------------------------------------------------------------------------------------------- the platform policy


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    """Platform-wide booking rules; per-hospital ones live in ``Hospital.rules`` (``BookingRules``)."""

    limits: PersonLimits = field(default_factory=PersonLimits)
    """APT-005."""
    bans: tuple[BanRule, ...] = field(default_factory=lambda: (BanRule(),))
    """APT-008, across hospitals: 3 no-shows within 90 days suspend online booking for 90 days [C]. Each
    hospital's own ``no_show_rules`` apply on top, at that hospital."""
    identity_mode: IdentityMode = IdentityMode.OWN_DOCUMENT
    """APT-003: the default way to book a child without a document ..."""
    identity_modes: Mapping[str, IdentityMode] = field(default_factory=dict)
    """... and the hospitals that book otherwise (hospital code -> mode)."""
    closed_hours: tuple[time, time] | None = None
    """APT-010: a nightly window (Asia/Shanghai, start inclusive, end exclusive, may wrap midnight) in which no
    booking is taken, e.g. (00:00, 06:30); None: always open."""

    def mode_for(self, hospital_code: str) -> IdentityMode:
        return self.identity_modes.get(hospital_code, self.identity_mode)

    def bans_at(self, hospital_code: str, hospital_rules: BookingRules) -> tuple[BanRule, ...]:
        return (*self.bans, *(BanRule.of_hospital(r, hospital_code) for r in hospital_rules.no_show_rules))


def check_open_hours(policy: BookingPolicy, now: datetime) -> BookingClosedHoursError | None:
    """APT-010: no booking inside the nightly closed window."""
    if policy.closed_hours is None:
        return None
    start, end = policy.closed_hours
    local = now.astimezone(SHANGHAI).time()
    inside = start <= local < end if start <= end else (local >= start or local < end)
    return BookingClosedHoursError("closed hours") if inside and start != end else None


def admit(
    policy: BookingPolicy,
    *,
    identity: BookingIdentity,
    person_bookings: Sequence[Booking],
    candidate: Candidate,
    hospital_rules: BookingRules,
    now: datetime,
    forgiven_until: datetime | None = None,
) -> DomainError | None:
    """Every person-level check of a new booking (or a reschedule) in order: opening hours (APT-010), real name
    (APT-002/003), bans (APT-008), limits (APT-005). ``person_bookings`` are all of the person's bookings, made
    from any account (the use case reads them under the person's lock, DESIGN §3.2); ``forgiven_until`` is the
    latest operator's lift of a ban (APT-008). The slot-level checks (window, capacity) are the state machine's."""
    if identity.person_id != candidate.person_id:
        raise ValueError("identity and candidate are of different persons")
    return (
        check_open_hours(policy, now)
        or check_real_name(identity, policy.mode_for(candidate.hospital_code))
        or check_bans(
            person_bookings,
            policy.bans_at(candidate.hospital_code, hospital_rules),
            now,
            person_id=candidate.person_id,
            hospital_code=candidate.hospital_code,
            forgiven_until=forgiven_until,
        )
        or check_limits(person_bookings, candidate, policy.limits, now)
    )
