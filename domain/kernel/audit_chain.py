"""The audit hash chain (DESIGN D13, SEC-L-03): sealing committed records and verifying them.

Writers only insert records, so no writer waits on a chain head. A single sealer (a periodic task) takes
committed records that are older than a grace period and not chained yet, in id order, and appends links::

    hash_n = H(bytes(hash_{n-1}) || canonical(record_n)),   seq_n = seq_{n-1} + 1

``H`` is the configured suite's digest (SHA-256 for ``intl``, SM3 for ``sm``). The first link follows the
genesis hash (64 zeros) or, once old partitions were dropped, the latest anchor. A record whose transaction
commits late (a lower id than one already sealed) is sealed by a later run; the chain's order is ``seq``.

The canonical encoding of a record is UTF-8 JSON with sorted keys, separators ``(",", ":")`` and
``ensure_ascii=False``; the instant is ISO-8601 in UTC with microseconds (``2026-11-22T01:00:00.000000+00:00``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Protocol, Self

from domain.kernel.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    AuditRepository,
    ChainLink,
    ChainProblem,
    ChainVerdict,
)
from domain.kernel.crypto import Digest

ENCODING_VERSION: Final = 1


class AuditUnitOfWork(Protocol):
    """The part of the unit of work the audit use cases need."""

    @property
    def audit(self) -> AuditRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


AuditUnitOfWorkFactory = Callable[[], AuditUnitOfWork]


def canonical_instant(instant: datetime) -> str:
    """ISO-8601 in UTC with microseconds, e.g. ``2026-11-22T01:00:00.000000+00:00``."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant inside the system is aware UTC")
    return instant.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_bytes(record: AuditRecord) -> bytes:
    """The deterministic byte encoding of a record that the chain hashes."""
    event = record.event
    document: dict[str, Any] = {
        "v": ENCODING_VERSION,
        "id": record.id,
        "occurred_at": canonical_instant(record.occurred_at),
        "action": event.action,
        "outcome": str(event.outcome),
        "actor": event.actor,
        "actor_role": event.actor_role,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "source_ip": event.source_ip,
        "device": event.device,
        "request_id": event.request_id,
        "reason": event.reason,
        "details": dict(event.details),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def link_hash(prev_hash_hex: str, record: AuditRecord, digest: Digest) -> str:
    """The hash of the link for ``record`` following a link whose hash is ``prev_hash_hex`` (lower-case hex)."""
    previous = bytes.fromhex(prev_hash_hex)
    return digest.digest(previous + canonical_bytes(record)).hex()


def _start(head: ChainLink | None, anchor: ChainLink | None) -> tuple[int, str]:
    """The (seq, hash) the next link follows: the later of the chain head and the anchor, else the genesis."""
    best = max((link for link in (head, anchor) if link is not None), key=lambda link: link.seq, default=None)
    return (0, GENESIS_HASH) if best is None else (best.seq, best.hash_hex)


async def seal_audit(
    uow_factory: AuditUnitOfWorkFactory,
    digest: Digest,
    *,
    now: datetime,
    grace_seconds: float,
    batch: int,
) -> int:
    """Chain the committed records older than ``now - grace_seconds``, ``batch`` per transaction.

    Returns how many records were sealed; 0 as soon as another sealer holds the lock.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    if grace_seconds < 0:
        raise ValueError("grace_seconds must not be negative")
    older_than = now - timedelta(seconds=grace_seconds)
    sealed = 0
    while True:
        async with uow_factory() as uow:
            repo = uow.audit
            if not await repo.try_lock_sealer():
                return sealed
            seq, previous = _start(await repo.chain_head(), await repo.latest_anchor())
            records = await repo.unsealed(older_than=older_than, limit=batch)
            if not records:
                return sealed
            links: list[ChainLink] = []
            for record in records:
                seq += 1
                previous = link_hash(previous, record, digest)
                links.append(ChainLink(seq=seq, audit_id=record.id, hash_hex=previous))
            await repo.append_links(links)
            await uow.commit()
        sealed += len(records)
        if len(records) < batch:
            return sealed


async def verify_audit_chain(uow_factory: AuditUnitOfWorkFactory, digest: Digest, *, batch: int) -> ChainVerdict:
    """Walk the chain in seq order from the latest anchor (or the genesis), recomputing every link.

    Stops at the first problem: a changed record or link, a link whose record is gone, or missing links.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    checked = 0
    async with uow_factory() as uow:
        repo = uow.audit
        anchor = await repo.latest_anchor()
        seq, previous = _start(None, anchor)
        while True:
            rows = await repo.records_with_links(after_seq=seq, limit=batch)
            for link, record in rows:
                if link.seq != seq + 1:
                    # Old links are pruned when their partitions are dropped: follow a newer anchor.
                    newer = await repo.latest_anchor()
                    if newer is not None and newer.seq > seq and newer.seq + 1 == link.seq:
                        seq, previous = newer.seq, newer.hash_hex
                    else:
                        return ChainVerdict(False, checked, link.audit_id, ChainProblem.SEQ_GAP)
                if record is None:
                    return ChainVerdict(False, checked, link.audit_id, ChainProblem.RECORD_MISSING)
                expected = link_hash(previous, record, digest)
                if record.id != link.audit_id or expected != link.hash_hex:
                    return ChainVerdict(False, checked, link.audit_id, ChainProblem.HASH_MISMATCH)
                seq, previous = link.seq, link.hash_hex
                checked += 1
            if len(rows) < batch:
                return ChainVerdict(True, checked)


async def record_failure(uow_factory: AuditUnitOfWorkFactory, event: AuditEvent, *, now: datetime) -> None:
    """Audit ``event`` in a unit of work of its own and commit it, so that the rollback of the failed
    business transaction cannot erase it (DESIGN D13, SEC-L-01/02)."""
    async with uow_factory() as uow:
        await uow.audit.record(event, now=now)
        await uow.commit()
