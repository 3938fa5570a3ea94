"""The transactional outbox table's repository."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.kernel.ids import new_id
from domain.kernel.outbox import OutboxMessage
from persistence.kernel.tables import outbox


class SqlOutboxRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        topic: str,
        payload: Mapping[str, Any],
        *,
        now: datetime,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        message_id = new_id()
        await self._conn.execute(
            outbox.insert().values(
                id=message_id,
                topic=topic,
                key=key,
                payload=dict(payload),
                headers=dict(headers or {}),
                created_at=now,
                available_at=now,
                attempts=0,
            )
        )
        return message_id

    async def claim(self, limit: int, *, now: datetime) -> Sequence[OutboxMessage]:
        query = (
            sa.select(outbox)
            .where(outbox.c.relayed_at.is_(None), outbox.c.available_at <= now)
            .order_by(outbox.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await self._conn.execute(query)).mappings().all()
        return [
            OutboxMessage(
                id=row["id"],
                topic=row["topic"],
                payload=row["payload"],
                created_at=row["created_at"],
                key=row["key"],
                attempts=row["attempts"],
                headers=row["headers"],
            )
            for row in rows
        ]

    async def mark_relayed(self, ids: Sequence[str], *, now: datetime) -> None:
        if ids:
            await self._conn.execute(
                outbox.update().where(outbox.c.id.in_(list(ids))).values(relayed_at=now, attempts=outbox.c.attempts + 1)
            )

    async def mark_failed(self, message_id: str, *, now: datetime, retry_at: datetime, error: str) -> None:
        await self._conn.execute(
            outbox.update()
            .where(outbox.c.id == message_id)
            .values(available_at=retry_at, attempts=outbox.c.attempts + 1, last_error=error[:500])
        )

    async def oldest_pending_at(self) -> datetime | None:
        value = await self._conn.scalar(
            sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.relayed_at.is_(None))
        )
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value
