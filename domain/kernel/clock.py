"""The clock is a port: the domain never reads the time itself (DESIGN D3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
"""China has one time zone and no daylight saving since 1991: a fixed offset is exact."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...


def to_shanghai(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant inside the system is aware UTC")
    return instant.astimezone(SHANGHAI)


def ensure_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant inside the system is aware UTC")
    return instant.astimezone(UTC)


class ClockControl(Protocol):
    """An adjustable clock for the demo and tests (``HSP_CLOCK__MODE=offset``, DESIGN D3).

    The offset is kept where every process reads it (the database in multi-process tests, the process
    itself in the single-process demo); ``sync`` reloads it, ``advance`` moves it for everyone.
    """

    def now(self) -> datetime: ...

    @property
    def offset_seconds(self) -> float: ...

    async def sync(self) -> None: ...

    async def advance(self, seconds: float) -> datetime: ...


class OffsetStore(Protocol):
    """Where the shared clock offset lives."""

    async def load(self) -> float: ...

    async def add(self, seconds: float) -> float:
        """Atomically add to the stored offset; returns the new offset."""
        ...
