"""The booking and its states (DESIGN §5). A booking is made for a *person* (not an account): two accounts that
manage one child see the same bookings and share the child's limits (DESIGN D4, APT-005)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from domain.kernel.clock import to_shanghai


class BookingState(StrEnum):
    HELD = "held"
    """A number is taken and a payment order is open until ``hold_expires_at`` (APT-009)."""
    PAID = "paid"
    """Paid (or free): the registration is being confirmed at the HIS."""
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    """Not paid in time: the number went back. A late payment may still re-take it (or is refunded)."""
    CANCELLED = "cancelled"
    """By the resident (before the cut-off once paid, APT-006)."""
    STOPPED = "stopped"
    """The session was stopped (停诊): refunded, no penalty (APT-007)."""
    REFUNDED_LATE = "refunded_late"
    """Paid after expiry when the number was gone: refunded."""
    CONFIRM_FAILED = "confirm_failed"
    """The HIS refused the registration for good: refunded."""
    CHECKED_IN = "checked_in"
    NO_SHOW = "no_show"
    """Not checked in within the window (APT-007): counts towards the bans of APT-008."""
    COMPLETED = "completed"


HOLDS_NUMBER = frozenset(
    {
        BookingState.HELD,
        BookingState.PAID,
        BookingState.CONFIRMED,
        BookingState.CHECKED_IN,
        BookingState.COMPLETED,
        BookingState.NO_SHOW,
    }
)
"""States whose booking holds one number of its slot: a slot's taken count is the number of its bookings in
these states. A no-show's number was forfeited, not given back (APT-010)."""

TERMINAL = frozenset(
    {
        BookingState.CANCELLED,
        BookingState.STOPPED,
        BookingState.REFUNDED_LATE,
        BookingState.CONFIRM_FAILED,
        BookingState.NO_SHOW,
        BookingState.COMPLETED,
    }
)
"""No event moves a booking out of these (a late payment on a cancelled hold is refunded, the state stays)."""

UPCOMING = frozenset({BookingState.HELD, BookingState.PAID, BookingState.CONFIRMED})
"""Before the visit: a stopped session or a sync's change of time concerns these."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The moments of one booking, computed from its hospital's rules when the slot is taken (and again when the
    slot moves): a resident is held to the rules shown when booking."""

    hold_expires_at: datetime | None
    """APT-009: an unpaid hold is released after this; None for a free slot."""
    cancel_deadline: datetime
    """APT-006: cancelling (and rescheduling) is possible strictly before this instant."""
    checkin_opens_at: datetime
    """APT-010: check-in is possible from this instant ..."""
    checkin_closes_at: datetime
    """... up to and including this one; after it the booking is a no-show (APT-007)."""


@dataclass(frozen=True, slots=True)
class Booking:
    id: str
    account_id: str
    """The account that booked; every account managing the person sees it."""
    person_id: str
    hospital_code: str
    department_code: str
    doctor_code: str | None
    session_id: str
    slot_id: str
    slot_start: datetime
    slot_end: datetime
    fee_fen: int
    """Self-pay registration fee; 0 for a free slot (no payment order)."""
    created_at: datetime
    deadlines: Deadlines
    state: BookingState = BookingState.HELD
    payment_order_id: str | None = None
    paid_at: datetime | None = None
    refund_reason: str | None = None
    """Set once a refund of the payment was requested: never twice for one booking."""
    his_lock_id: str | None = None
    his_registration_id: str | None = None
    queue_number: int | None = None
    ended_at: datetime | None = None
    """When the booking left the upcoming states (expired, cancelled, stopped, ...)."""
    end_reason: str | None = None
    reschedules: int = 0
    version: int = 0

    @property
    def visit_day(self) -> date:
        """The visit day in Asia/Shanghai, which the per-day limits of APT-005 count."""
        return to_shanghai(self.slot_start).date()

    @property
    def paid(self) -> bool:
        return self.paid_at is not None

    @property
    def holds_number(self) -> bool:
        return self.state in HOLDS_NUMBER

    def live_at(self, now: datetime) -> bool:
        """Holds a number now: a hold past its expiry that the sweep has not reached yet does not (DESIGN §3.6,
        the check on read)."""
        if self.state is BookingState.HELD:
            expires = self.deadlines.hold_expires_at
            return expires is None or now < expires
        return self.holds_number


@dataclass(frozen=True, slots=True)
class BanLift:
    """An operator lifted a person's suspension of online booking (APT-008): the no-shows (and counted
    cancellations) at or before ``covers_until`` no longer count towards any ban. Audited; never deleted."""

    id: str
    person_id: str
    covers_until: datetime
    lifted_at: datetime
    actor: str
    """``staff:<id>``."""
    reason: str
