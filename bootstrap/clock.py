"""Clocks: the system clock, and the offset clock of the demo and tests (DESIGN D3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.kernel.clock import OffsetStore


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class LocalOffsetStore:
    """The single-process demo keeps the offset in the process itself."""

    def __init__(self) -> None:
        self._offset = 0.0

    async def load(self) -> float:
        return self._offset

    async def add(self, seconds: float) -> float:
        self._offset += seconds
        return self._offset


class OffsetClock:
    """System time plus a shared offset. ``now`` is synchronous and uses the offset last loaded; ``sync``
    reloads it (each request and task does so first in offset mode), ``advance`` moves it for everyone."""

    def __init__(self, store: OffsetStore, base: SystemClock | None = None) -> None:
        self._store = store
        self._base = base or SystemClock()
        self._offset = 0.0

    def now(self) -> datetime:
        return self._base.now() + timedelta(seconds=self._offset)

    @property
    def offset_seconds(self) -> float:
        return self._offset

    async def sync(self) -> None:
        self._offset = await self._store.load()

    async def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset = await self._store.add(seconds)
        return self.now()
