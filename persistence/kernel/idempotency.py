"""Idempotency records in PostgreSQL (DESIGN D8), each step in its own short transaction."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from domain.kernel.idempotency import (
    BeginResult,
    IdempotencyInProgressError,
    IdempotencyKeyMismatchError,
    IdempotencyScope,
    IdempotencyState,
    StoredResponse,
)
from persistence.db import ConnectionSource
from persistence.kernel.tables import idempotency_records as t


def _match(scope: IdempotencyScope) -> sa.ColumnElement[bool]:
    return sa.and_(
        t.c.principal == scope.principal, t.c.method == scope.method, t.c.route == scope.route, t.c.key == scope.key
    )


class SqlIdempotencyStore:
    def __init__(self, source: ConnectionSource) -> None:
        self._source = source

    async def begin(
        self,
        scope: IdempotencyScope,
        *,
        fingerprint: str,
        now: datetime,
        lease_seconds: int,
        retain_seconds: int,
    ) -> BeginResult:
        values = {
            "principal": scope.principal,
            "method": scope.method,
            "route": scope.route,
            "key": scope.key,
            "fingerprint": fingerprint,
            "state": IdempotencyState.IN_PROGRESS.value,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "expires_at": now + timedelta(seconds=retain_seconds),
            "created_at": now,
        }
        insert = pg_insert(t) if self._source.dialect == "postgresql" else sqlite_insert(t)
        async with self._source.autocommit() as conn:
            inserted = await conn.execute(insert.values(**values).on_conflict_do_nothing().returning(t.c.key))
            if inserted.first() is not None:
                return BeginResult(started=True)
            row = (await conn.execute(sa.select(t).where(_match(scope)).with_for_update())).mappings().first()
            if row is None:  # purged between the two statements: treat as new
                await conn.execute(t.insert().values(**values))
                return BeginResult(started=True)
            if row["expires_at"] <= now:
                await conn.execute(t.update().where(_match(scope)).values(**values))
                return BeginResult(started=True)
            if row["fingerprint"] != fingerprint:
                raise IdempotencyKeyMismatchError()
            if row["state"] == IdempotencyState.COMPLETED.value:
                return BeginResult(
                    started=False,
                    replay=StoredResponse(status=row["status"], headers=row["headers"] or {}, body=row["body"] or b""),
                )
            if row["lease_until"] > now:
                remaining = (row["lease_until"] - now).total_seconds()
                raise IdempotencyInProgressError(retry_after=max(1, min(5, math.ceil(remaining))))
            # The owner's lease ran out (it crashed): take the record over.
            await conn.execute(
                t.update().where(_match(scope)).values(lease_until=now + timedelta(seconds=lease_seconds))
            )
            return BeginResult(started=True)

    async def complete(self, scope: IdempotencyScope, response: StoredResponse, *, now: datetime) -> None:
        async with self._source.autocommit() as conn:
            await conn.execute(
                t.update()
                .where(_match(scope))
                .values(
                    state=IdempotencyState.COMPLETED.value,
                    status=response.status,
                    headers=dict(response.headers),
                    body=response.body,
                )
            )

    async def abandon(self, scope: IdempotencyScope) -> None:
        async with self._source.autocommit() as conn:
            await conn.execute(t.delete().where(_match(scope), t.c.state == IdempotencyState.IN_PROGRESS.value))

    async def purge_expired(self, *, now: datetime) -> int:
        async with self._source.autocommit() as conn:
            result = await conn.execute(t.delete().where(t.c.expires_at <= now))
        return int(result.rowcount or 0)
