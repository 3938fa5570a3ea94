"""The audit log repository (DESIGN D13). Append-only: the application role may only INSERT and SELECT."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.kernel.audit import AuditEvent, AuditRecord, ChainLink, Outcome, redact
from persistence.kernel.audit_tables import audit_anchor, audit_chain, audit_log

SEALER_LOCK_KEY: Final = 0x4853_5041_5544_4954
"""The PostgreSQL advisory lock that makes the sealer (and partition pruning) single."""


def _record(row: sa.RowMapping) -> AuditRecord:
    details = row["details"] or {}
    return AuditRecord(
        id=int(row["id"]),
        occurred_at=row["occurred_at"],
        event=AuditEvent(
            action=row["action"],
            outcome=Outcome(row["outcome"]),
            actor=row["actor"],
            actor_role=row["actor_role"],
            object_type=row["object_type"],
            object_id=row["object_id"],
            source_ip=row["source_ip"],
            device=row["device"],
            request_id=row["request_id"],
            reason=row["reason"],
            details=dict(details),
        ),
    )


def _link(row: sa.RowMapping) -> ChainLink:
    return ChainLink(seq=int(row["seq"]), audit_id=int(row["audit_id"]), hash_hex=str(row["hash_hex"]))


class SqlAuditRepository:
    """Implements ``domain.kernel.audit.AuditRepository`` on the unit of work's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(self, event: AuditEvent, *, now: datetime) -> int:
        clean = redact(event)
        audit_id = await self._conn.scalar(
            audit_log.insert()
            .values(
                occurred_at=now,
                action=clean.action,
                outcome=str(Outcome(clean.outcome)),
                actor=clean.actor,
                actor_role=clean.actor_role,
                object_type=clean.object_type,
                object_id=clean.object_id,
                source_ip=clean.source_ip,
                device=clean.device,
                request_id=clean.request_id,
                reason=clean.reason,
                details=dict(clean.details),
            )
            .returning(audit_log.c.id)
        )
        assert audit_id is not None
        return int(audit_id)

    async def try_lock_sealer(self) -> bool:
        if self._conn.dialect.name != "postgresql":
            return True  # SQLite (the embedded demo) serialises writers by itself.
        locked = await self._conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(SEALER_LOCK_KEY)))
        return bool(locked)

    async def unsealed(self, *, older_than: datetime, limit: int) -> Sequence[AuditRecord]:
        sealed = sa.select(audit_chain.c.seq).where(audit_chain.c.audit_id == audit_log.c.id)
        query = (
            sa.select(audit_log)
            .where(audit_log.c.occurred_at < older_than, ~sa.exists(sealed))
            .order_by(audit_log.c.id)
            .limit(limit)
        )
        rows = (await self._conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def chain_head(self) -> ChainLink | None:
        query = sa.select(audit_chain).order_by(audit_chain.c.seq.desc()).limit(1)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _link(row)

    async def latest_anchor(self) -> ChainLink | None:
        query = (
            sa.select(audit_anchor.c.seq, audit_anchor.c.audit_id, audit_anchor.c.hash_hex)
            .order_by(audit_anchor.c.seq.desc())
            .limit(1)
        )
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _link(row)

    async def append_links(self, links: Sequence[ChainLink]) -> None:
        if links:
            await self._conn.execute(
                audit_chain.insert(),
                [{"seq": link.seq, "audit_id": link.audit_id, "hash_hex": link.hash_hex} for link in links],
            )

    async def records_with_links(self, *, after_seq: int, limit: int) -> Sequence[tuple[ChainLink, AuditRecord | None]]:
        query = sa.select(audit_chain).where(audit_chain.c.seq > after_seq).order_by(audit_chain.c.seq).limit(limit)
        links = [_link(row) for row in (await self._conn.execute(query)).mappings().all()]
        if not links:
            return []
        ids = [link.audit_id for link in links]
        rows = (await self._conn.execute(sa.select(audit_log).where(audit_log.c.id.in_(ids)))).mappings().all()
        records = {int(row["id"]): _record(row) for row in rows}
        return [(link, records.get(link.audit_id)) for link in links]
