"""The shared clock offset kept in the database, so that every process of a test agrees (DESIGN D3)."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.db import ConnectionSource
from persistence.kernel.tables import clock_offset


class SqlOffsetStore:
    def __init__(self, source: ConnectionSource) -> None:
        self._source = source

    async def load(self) -> float:
        async with self._source.autocommit() as conn:
            value = await conn.scalar(sa.select(clock_offset.c.offset_seconds).where(clock_offset.c.id == 1))
        return float(value or 0.0)

    async def add(self, seconds: float) -> float:
        async with self._source.autocommit() as conn:
            value = await conn.scalar(
                clock_offset.update()
                .where(clock_offset.c.id == 1)
                .values(offset_seconds=clock_offset.c.offset_seconds + seconds)
                .returning(clock_offset.c.offset_seconds)
            )
        return float(value or 0.0)
