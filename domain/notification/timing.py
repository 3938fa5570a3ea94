"""When a message may go out: quiet hours defer normal messages only (issue: notifications). The window is
configurable (default 21:00–08:00 Asia/Shanghai); a time-bound reminder whose moment falls inside quiet hours
goes out before they begin rather than after its moment has passed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from domain.kernel.clock import SHANGHAI
from domain.notification.model import EventClass


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time = time(21, 0)
    end: time = time(8, 0)

    def contains(self, instant: datetime) -> bool:
        local = instant.astimezone(SHANGHAI).time()
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, instant: datetime) -> datetime:
        """The first instant at or after ``instant`` outside quiet hours."""
        if not self.contains(instant):
            return instant
        local = instant.astimezone(SHANGHAI)
        end_today = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end_today if end_today > local else end_today + timedelta(days=1)

    def began_before(self, instant: datetime) -> datetime:
        """When the quiet period that contains ``instant`` started."""
        local = instant.astimezone(SHANGHAI)
        start_today = local.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return start_today if start_today <= local else start_today - timedelta(days=1)


def send_at(event_class: EventClass, *, now: datetime, quiet: QuietHours, moment: datetime | None = None) -> datetime:
    """When a message due ``now`` may go out. Transactional and urgent: now. Normal: now, or when quiet hours
    end; but a message bound to a ``moment`` inside the current quiet period goes now rather than after it."""
    if event_class is not EventClass.NORMAL or not quiet.contains(now):
        return now
    end = quiet.ends_after(now)
    if moment is not None and moment < end:
        return now
    return end


def plan_reminder(moment: datetime, *, quiet: QuietHours, lead: timedelta = timedelta(minutes=30)) -> datetime:
    """When to schedule a normal reminder meant for ``moment``: then, or ``lead`` before quiet hours begin when
    the moment falls inside them."""
    if not quiet.contains(moment):
        return moment
    return quiet.began_before(moment) - lead
