"""Owner-only maintenance of the audit log's monthly partitions (DESIGN D13, SEC-L-03, SEC-L-04).

These run as the schema owner (the application's role may not create or drop tables). Each function takes
an ``AsyncEngine`` (it then runs in a transaction of its own) or an ``AsyncConnection`` (it runs in the
caller's transaction, which the caller commits). On SQLite, which has no partitions, they do nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.kernel.audit import SEALER_LOCK_KEY
from persistence.kernel.audit_tables import BigId, audit_anchor, audit_chain
from persistence.types import UTCDateTime

PARENT: Final = "audit_log"
DEFAULT_PARTITION: Final = "audit_log_default"
REFUSE_FUNCTION: Final = "audit_refuse_change"
TRUNCATE_TRIGGER: Final = "audit_refuse_truncate"
MIN_RETENTION: Final = timedelta(days=183)
"""Audit records stay online at least six months (SEC-L-04)."""

_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RetentionError(ValueError):
    """Dropping these partitions would keep less than the minimum retention."""


def month_start(instant: datetime) -> datetime:
    """The first instant (UTC) of the month containing ``instant``."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant inside the system is aware UTC")
    utc = instant.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    """``start`` (a month start) moved by ``months`` whole months."""
    index = start.year * 12 + (start.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start.year:04d}m{start.month:02d}"


def _quoted(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad table name {name!r}")
    return f'"{name}"'


def partition_guard_ddl(name: str) -> list[str]:
    """A partition's own TRUNCATE guard (a statement trigger on the parent does not fire for a partition
    truncated by name) and no rights for PUBLIC. Row triggers are inherited from the parent."""
    table = _quoted(name)
    return [
        f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {REFUSE_FUNCTION}()",
        f"REVOKE ALL ON TABLE {table} FROM PUBLIC",
    ]


def month_partition_ddl(start: datetime) -> list[str]:
    """DDL creating the monthly partition that begins at ``start``, with its guards."""
    lower = month_start(start)
    upper = add_months(lower, 1)
    name = partition_name(lower)
    create = (
        f"CREATE TABLE {_quoted(name)} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
    )
    return [create, *partition_guard_ddl(name)]


def default_partition_ddl() -> list[str]:
    """The DEFAULT partition, so that no insert ever fails for want of a partition."""
    return [
        f"CREATE TABLE {_quoted(DEFAULT_PARTITION)} PARTITION OF {PARENT} DEFAULT",
        *partition_guard_ddl(DEFAULT_PARTITION),
    ]


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime
    upper: datetime


@asynccontextmanager
async def _transaction(target: AsyncEngine | AsyncConnection) -> AsyncIterator[AsyncConnection]:
    if isinstance(target, AsyncEngine):
        async with target.begin() as conn:
            yield conn
    elif target.in_transaction():
        yield target
    else:
        async with target.begin():
            yield target


async def list_partitions(conn: AsyncConnection) -> list[Partition]:
    """The bounded (monthly) partitions of ``audit_log``, oldest first; the DEFAULT partition is left out."""
    await conn.execute(sa.text("SET LOCAL TimeZone = 'UTC'"))
    rows = await conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    partitions: list[Partition] = []
    for name, bound in rows:
        match = _BOUNDS.fullmatch(str(bound))
        if match is None:
            continue
        lower, upper = (datetime.fromisoformat(value).astimezone(UTC) for value in match.groups())
        partitions.append(Partition(name=str(name), lower=lower, upper=upper))
    return sorted(partitions, key=lambda partition: partition.lower)


async def ensure_partitions(target: AsyncEngine | AsyncConnection, *, now: datetime, months_ahead: int) -> list[str]:
    """Create the missing monthly partitions from the month of ``now`` through ``months_ahead`` months later.

    A month whose rows already sit in the DEFAULT partition is skipped (PostgreSQL refuses to attach a
    partition that the default's rows would belong to); those rows stay where they are. Returns the names
    created.
    """
    if months_ahead < 0:
        raise ValueError("months_ahead must not be negative")
    async with _transaction(target) as conn:
        if conn.dialect.name != "postgresql":
            return []
        existing = {partition.name for partition in await list_partitions(conn)}
        created: list[str] = []
        first = month_start(now)
        for offset in range(months_ahead + 1):
            lower = add_months(first, offset)
            name = partition_name(lower)
            if name in existing:
                continue
            default = sa.table(DEFAULT_PARTITION, sa.column("occurred_at", UTCDateTime()))
            stranded = await conn.scalar(
                sa.select(
                    sa.exists().where(default.c.occurred_at >= lower, default.c.occurred_at < add_months(lower, 1))
                )
            )
            if stranded:
                continue
            for statement in month_partition_ddl(lower):
                await conn.execute(sa.text(statement))
            created.append(name)
        return created


async def drop_sealed_partitions(
    target: AsyncEngine | AsyncConnection, *, before: datetime, now: datetime
) -> list[str]:
    """Drop the monthly partitions that end on or before ``before`` and whose every row is sealed.

    Oldest first; it stops at the first partition holding an unsealed row, and it drops only partitions
    whose links form the start of the remaining chain. The link of the last dropped row is recorded in
    ``audit_anchor`` and the links up to it are removed, so that verification of the remaining chain starts
    from that anchor. Refuses (``RetentionError``) a ``before`` later than ``now - MIN_RETENTION``.
    Returns the names dropped.
    """
    if before > now - MIN_RETENTION:
        raise RetentionError(f"audit records are kept at least {MIN_RETENTION.days} days")
    async with _transaction(target) as conn:
        if conn.dialect.name != "postgresql":
            return []
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SEALER_LOCK_KEY)))
        anchor_seq = int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(audit_anchor.c.seq), 0))) or 0)
        chosen: list[tuple[Partition, int, int]] = []
        for partition in await list_partitions(conn):
            if partition.upper > before:
                break
            table = _quoted(partition.name)
            # SHARE: no row can arrive while the partition is inspected; readers are not blocked.
            await conn.execute(sa.text(f"LOCK TABLE {table} IN SHARE MODE"))
            rows_of = sa.table(partition.name, sa.column("id", BigId))
            row = (
                await conn.execute(
                    sa.select(
                        sa.func.count(), sa.func.count(audit_chain.c.seq), sa.func.max(audit_chain.c.seq)
                    ).select_from(rows_of.outerjoin(audit_chain, audit_chain.c.audit_id == rows_of.c.id))
                )
            ).one()
            rows, sealed, top = int(row[0]), int(row[1]), int(row[2] or 0)
            if sealed != rows:
                break
            chosen.append((partition, rows, top))
        while chosen and not await _starts_the_chain(conn, chosen, anchor_seq):
            chosen.pop()  # a younger partition's row was sealed before one of these: keep them for later
        if not chosen:
            return []
        names = [partition.name for partition, _, _ in chosen]
        top = max([anchor_seq, *(top for _, _, top in chosen)])
        if top > anchor_seq:
            link = (
                await conn.execute(
                    sa.select(audit_chain.c.seq, audit_chain.c.audit_id, audit_chain.c.hash_hex).where(
                        audit_chain.c.seq == top
                    )
                )
            ).one()
            await conn.execute(
                audit_anchor.insert().values(
                    seq=link.seq,
                    audit_id=link.audit_id,
                    hash_hex=link.hash_hex,
                    recorded_at=now,
                    dropped_before=before,
                    partitions=names,
                )
            )
            # The chain's guard lets the owner delete only links at or behind the latest anchor.
            await conn.execute(audit_chain.delete().where(audit_chain.c.seq <= top))
        await conn.execute(sa.text(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE"))
        for name in names:
            await conn.execute(sa.text(f"DROP TABLE {_quoted(name)}"))
        return names


async def _starts_the_chain(conn: AsyncConnection, chosen: list[tuple[Partition, int, int]], anchor_seq: int) -> bool:
    """Whether the links of the chosen partitions' rows are exactly the links that follow the anchor."""
    rows_total = sum(rows for _, rows, _ in chosen)
    top = max([anchor_seq, *(top for _, _, top in chosen)])
    between = await conn.scalar(
        sa.select(sa.func.count()).where(audit_chain.c.seq > anchor_seq, audit_chain.c.seq <= top)
    )
    return int(between or 0) == rows_total
