"""A ClockControl for simulator tests: it moves only when advanced."""

from __future__ import annotations

from datetime import datetime, timedelta


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self._start = start
        self._offset = 0.0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._offset)

    @property
    def offset_seconds(self) -> float:
        return self._offset

    async def sync(self) -> None:
        return None

    async def advance(self, seconds: float) -> datetime:
        self._offset += seconds
        return self.now()

    def reset(self) -> None:
        self._offset = 0.0
