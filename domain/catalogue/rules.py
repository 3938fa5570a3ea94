"""Per-hospital booking rules (APT-004, APT-006..010). None of these numbers is law [C]: all configurable."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from domain.kernel.clock import SHANGHAI


@dataclass(frozen=True, slots=True)
class NoShowRule:
    """APT-008 as a rule table row: ``count`` events within ``window_days`` ban online booking ``ban_days``."""

    event: str = "no_show"
    count: int = 3
    window_days: int = 90
    ban_days: int = 90


@dataclass(frozen=True, slots=True)
class BookingRules:
    window_days: int = 7
    """APT-004: slots for day D open ``window_days`` before D at ``release_time``."""
    release_time: time = time(8, 0)
    allow_same_day: bool = False
    cancel_cutoff_hours_before: int = 0
    """APT-006: 0 means the day-before rule below."""
    cancel_cutoff_day_before_at: time = time(15, 0)
    payment_minutes: int = 15
    """APT-009: an unpaid hold is released after this long."""
    checkin_before_minutes: int = 60
    checkin_after_minutes: int = 30
    """APT-010 and APT-007: arriving later than this after the slot starts counts as a no-show."""
    no_show_rules: tuple[NoShowRule, ...] = field(default_factory=lambda: (NoShowRule(),))
    lock_at_his: bool = False
    """Lock a number at the HIS before payment (for HIS that do not separate the platform's share)."""

    def opens_at(self, day: date) -> datetime:
        """When slots of ``day`` are released to residents (APT-004), as an aware instant."""
        release_day = day - timedelta(days=self.window_days)
        return datetime.combine(release_day, self.release_time, tzinfo=SHANGHAI)

    def bookable(self, day: date, *, now: datetime) -> bool:
        today = now.astimezone(SHANGHAI).date()
        if day < today or (day == today and not self.allow_same_day):
            return False
        return now >= self.opens_at(day)

    def cancel_deadline(self, slot_start: datetime) -> datetime:
        """APT-006: N hours before the slot, or a time on the day before."""
        if self.cancel_cutoff_hours_before > 0:
            return slot_start - timedelta(hours=self.cancel_cutoff_hours_before)
        local_day = slot_start.astimezone(SHANGHAI).date() - timedelta(days=1)
        return datetime.combine(local_day, self.cancel_cutoff_day_before_at, tzinfo=SHANGHAI)
