"""Scheduled messages: the reminder mechanism later features use (appointments, vaccinations, consults).

A row has a due time and a state. A beat task sends the due ones within a catch-up window, so a missed run
catches up and a very old reminder is not sent late; a row whose subject is no longer valid (a cancelled
booking) is skipped; a row scheduled again under the same key is rebuilt; one failing row never stops the
batch. Sending means handing the event to the notification service, which delivers it once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


class ScheduleState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ScheduledMessage:
    key: str
    """Unique per reminder, e.g. ``booking:{id}:evening-before``: scheduling the same key again rebuilds it."""
    event_type: str
    account_id: str
    subject_type: str
    subject_id: str
    values: Mapping[str, str] = field(repr=False)
    due_at: datetime
    id: int = 0
    state: ScheduleState = ScheduleState.PENDING


class ScheduleRepository(Protocol):
    async def upsert(self, item: ScheduledMessage, *, now: datetime) -> int:
        """Create the row, or rebuild the pending one under the same key. A finished one (sent, skipped,
        cancelled...) under the key is left as it is for the same due time (scheduling again is idempotent) and
        replaced by a new pending row for another due time (a moved appointment is a new reminder)."""
        ...

    async def cancel(self, key: str, *, now: datetime) -> bool:
        """Cancel the pending row under ``key``, if any."""
        ...

    async def cancel_subject(self, subject_type: str, subject_id: str, *, now: datetime) -> int: ...

    async def due(self, *, now: datetime, since: datetime, limit: int, lock: bool) -> Sequence[ScheduledMessage]: ...

    async def expire_older_than(self, since: datetime, *, now: datetime) -> int: ...

    async def finish(self, item_id: int, state: ScheduleState, *, outcome: str | None, now: datetime) -> None: ...


SubjectCheck = Callable[[str], Awaitable[bool]]
"""Is the subject (e.g. a booking id) still valid for its reminders?"""


@dataclass(frozen=True, slots=True)
class RunReport:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    expired: int = 0
    would_send: tuple[str, ...] = ()
    """In a dry run: the keys that would be sent."""


CATCH_UP = timedelta(hours=24)
