"""The audit log on PostgreSQL (DESIGN D13): append-only for every role, hash-chained by a single sealer,
partitioned by month and pruned only by the owner from a recorded anchor (SEC-L-01, -02, -03, -04, -05).

Tests that commit use a database of their own (``hsp_test_audit_<worker>``) whose audit tables are
emptied after each test, so that the rows of one test never reach another's chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bootstrap.migrate import upgrade
from domain.kernel.audit import AuditEvent, ChainProblem, ChainVerdict, Outcome
from domain.kernel.audit_chain import record_failure, seal_audit, verify_audit_chain
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.kernel.audit_admin import (
    RetentionError,
    add_months,
    drop_sealed_partitions,
    ensure_partitions,
    list_partitions,
    month_start,
    partition_name,
)
from persistence.kernel.audit_tables import audit_anchor, audit_chain, audit_log
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.conftest import MigratedDatabase as MigratedDatabase
from tests.conftest import create_test_database, drop_test_database

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
AUDIT_TABLES = ("audit_log", "audit_chain", "audit_anchor")


class Sha256:
    name = "sha256"

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()


class Sm3:
    name = "sm3"

    def digest(self, data: bytes) -> bytes:
        hasher = hashes.Hash(hashes.SM3())
        hasher.update(data)
        return hasher.finalize()


SHA256 = Sha256()


def _event(n: int = 0, *, outcome: Outcome = Outcome.SUCCESS, request_id: str | None = None) -> AuditEvent:
    return AuditEvent(
        action=f"test.event{n}",
        outcome=outcome,
        actor="account:7d3f",
        object_type="patient",
        object_id="5e8a",
        request_id=request_id,
        details={"n": str(n), "渠道": "小程序"},
    )


# --- a database of this module's own for tests that commit ---------------------------------------------


@pytest.fixture(scope="module")
def audit_database() -> Iterator[MigratedDatabase]:
    db = create_test_database(f"hsp_test_audit_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    yield db
    drop_test_database(db.name)


@pytest.fixture(scope="module")
async def audit_app_engine(audit_database: MigratedDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseConfig(url=audit_database.app_url, pool_size=5, max_overflow=10))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def audit_owner_engine(audit_database: MigratedDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseConfig(url=audit_database.owner_url, pool_size=2, max_overflow=5))
    yield engine
    await engine.dispose()


@pytest.fixture
async def audit_source(
    audit_app_engine: AsyncEngine, audit_owner_engine: AsyncEngine
) -> AsyncIterator[ConnectionSource]:
    """Committed units of work as the app role; the audit tables are emptied afterwards (the triggers are
    bypassed for that by the superuser's replica mode, which only a superuser may set)."""
    yield ConnectionSource(audit_app_engine)
    async with audit_owner_engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        await conn.execute(sa.text("TRUNCATE " + ", ".join(AUDIT_TABLES)))


async def _write(source: ConnectionSource, count: int, *, at: datetime = NOW, start: int = 0) -> list[int]:
    async with SqlUnitOfWork(source) as uow:
        ids = [await uow.audit.record(_event(start + n), now=at) for n in range(count)]
        await uow.commit()
    return ids


async def _seal(source: ConnectionSource, *, now: datetime = LATER, grace: float = 60, batch: int = 3) -> int:
    return await seal_audit(unit_of_work_factory(source), SHA256, now=now, grace_seconds=grace, batch=batch)


async def _verify(source: ConnectionSource, *, batch: int = 3) -> ChainVerdict:
    return await verify_audit_chain(unit_of_work_factory(source), SHA256, batch=batch)


async def _links(source: ConnectionSource) -> list[tuple[int, int]]:
    async with source.engine.connect() as conn:
        rows = await conn.execute(sa.select(audit_chain.c.seq, audit_chain.c.audit_id).order_by(audit_chain.c.seq))
        return [(int(seq), int(audit_id)) for seq, audit_id in rows]


async def _as_owner_without_guard(engine: AsyncEngine, table: str, statement: str, **params: object) -> None:
    """What a tampering owner could do: switch the guard off, change a row, switch it back on."""
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER audit_refuse_change"))
        await conn.execute(sa.text(statement), params)
        await conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER audit_refuse_change"))


# --- privileges and triggers (SEC-L-03) ----------------------------------------------------------------


async def test_app_role_can_insert_and_select_the_audit_log_sec_l_01_sec_l_02(uow_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(uow_source) as uow:
        audit_id = await uow.audit.record(_event(1, outcome=Outcome.FAILURE, request_id="req-9"), now=NOW)
        row = (await uow.connection.execute(sa.select(audit_log).where(audit_log.c.id == audit_id))).mappings().one()
    assert row["occurred_at"] == NOW
    assert (row["action"], row["outcome"], row["actor"], row["request_id"]) == (
        "test.event1",
        "failure",
        "account:7d3f",
        "req-9",
    )
    assert row["details"] == {"n": "1", "渠道": "小程序"}


async def test_sensitive_values_are_masked_before_they_are_written_sec_l_05(uow_source: ConnectionSource) -> None:
    event = AuditEvent(
        action="patient.read",
        outcome=Outcome.SUCCESS,
        object_id="11010519491231002X",
        details={"token": "secret-value", "phone": "13812345678"},
    )
    async with SqlUnitOfWork(uow_source) as uow:
        audit_id = await uow.audit.record(event, now=NOW)
        row = (await uow.connection.execute(sa.select(audit_log).where(audit_log.c.id == audit_id))).mappings().one()
    assert row["object_id"] == "110***********002X"
    assert row["details"] == {"token": "[redacted]", "phone": "138****5678"}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'success'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_log_default SET outcome = 'success'",
        "TRUNCATE audit_log_default",
        "UPDATE audit_chain SET hash_hex = 'x'",
        "DELETE FROM audit_chain",
        "TRUNCATE audit_chain",
        "INSERT INTO audit_anchor (seq, audit_id, hash_hex, recorded_at, dropped_before, partitions) "
        "VALUES (1, 1, 'x', now(), now(), '[]')",
        "DELETE FROM audit_anchor",
        "TRUNCATE audit_anchor",
        "DROP TABLE audit_log_default",
    ],
)
async def test_app_role_may_not_change_audit_rows_sec_l_03(app_engine: AsyncEngine, statement: str) -> None:
    async with app_engine.connect() as conn, conn.begin():
        await conn.execute(
            audit_log.insert().values(
                occurred_at=NOW - timedelta(days=365 * 30), action="test.x", outcome="failure", details={}
            )
        )
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
            await conn.execute(sa.text(statement))
        await conn.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'success' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
        "TRUNCATE audit_log",
        "UPDATE {partition} SET reason = 'x' WHERE id = :id",
        "DELETE FROM {partition} WHERE id = :id",
        "TRUNCATE {partition}",
        "TRUNCATE audit_log_default",
        "UPDATE audit_chain SET hash_hex = 'x' WHERE audit_id = :id",
        "DELETE FROM audit_chain WHERE audit_id = :id",
        "TRUNCATE audit_chain",
        "UPDATE audit_anchor SET hash_hex = 'x'",
        "DELETE FROM audit_anchor",
        "TRUNCATE audit_anchor",
    ],
)
async def test_the_owner_too_is_refused_by_the_triggers_sec_l_03(owner_engine: AsyncEngine, statement: str) -> None:
    partition = partition_name(month_start(datetime.now(UTC)))
    async with owner_engine.connect() as conn, conn.begin():
        audit_id = await conn.scalar(
            audit_log.insert()
            .values(occurred_at=datetime.now(UTC), action="test.x", outcome="failure", details={})
            .returning(audit_log.c.id)
        )
        await conn.execute(audit_chain.insert().values(seq=10**12, audit_id=audit_id, hash_hex="0" * 64))
        await conn.execute(
            audit_anchor.insert().values(
                seq=10**12 - 1, audit_id=0, hash_hex="0" * 64, recorded_at=NOW, dropped_before=NOW, partitions=[]
            )
        )
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(sa.text(statement.format(partition=partition)), {"id": audit_id})
        await conn.rollback()


# --- transactions (SEC-L-01, SEC-L-02) -----------------------------------------------------------------


async def test_a_record_in_a_rolled_back_unit_of_work_is_gone(uow_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(uow_source) as uow:
        audit_id = await uow.audit.record(_event(2), now=NOW)
    async with SqlUnitOfWork(uow_source) as uow:
        assert await uow.connection.scalar(sa.select(sa.func.count()).where(audit_log.c.id == audit_id)) == 0


async def test_record_failure_survives_the_rollback_of_the_business_transaction_sec_l_01_sec_l_02(
    committed_source: ConnectionSource, owner_engine: AsyncEngine
) -> None:
    request_id = f"req-failure-{os.getpid()}-{datetime.now(UTC).timestamp()}"
    failure = _event(3, outcome=Outcome.FAILURE, request_id=request_id)

    async def business_step() -> None:
        async with SqlUnitOfWork(committed_source) as uow:
            await uow.audit.record(_event(3, request_id=request_id), now=NOW)
            await record_failure(unit_of_work_factory(committed_source), failure, now=NOW)
            raise RuntimeError("the business step failed")

    try:
        with pytest.raises(RuntimeError, match="business step"):
            await business_step()
        async with committed_source.engine.connect() as conn:
            outcomes = (
                await conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.request_id == request_id))
            ).scalars()
            assert list(outcomes) == ["failure"]
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            await conn.execute(sa.text("DELETE FROM audit_log WHERE request_id = :r"), {"r": request_id})


# --- sealing and verification (SEC-L-03) ---------------------------------------------------------------


async def test_sealing_chains_committed_rows_in_id_order_once_sec_l_03(audit_source: ConnectionSource) -> None:
    ids = await _write(audit_source, 7)
    assert await _seal(audit_source, batch=3) == 7
    assert await _links(audit_source) == list(enumerate(ids, start=1))
    assert await _seal(audit_source) == 0
    assert await _links(audit_source) == list(enumerate(ids, start=1))
    assert await _verify(audit_source) == ChainVerdict(ok=True, checked=7)


async def test_rows_younger_than_the_grace_are_sealed_later_sec_l_03(audit_source: ConnectionSource) -> None:
    old = await _write(audit_source, 2, at=NOW)
    young = await _write(audit_source, 1, at=LATER - timedelta(seconds=30))
    assert await _seal(audit_source, now=LATER, grace=60) == 2
    assert [audit_id for _, audit_id in await _links(audit_source)] == old
    assert await _seal(audit_source, now=LATER + timedelta(seconds=31), grace=60) == 1
    assert [audit_id for _, audit_id in await _links(audit_source)] == old + young
    assert (await _verify(audit_source)).ok


async def test_a_row_committed_late_is_sealed_by_the_next_run_sec_l_03(audit_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(audit_source) as slow:
        late = await slow.audit.record(_event(10), now=NOW)
        (early,) = await _write(audit_source, 1, start=11)
        assert late < early
        assert await _seal(audit_source) == 1
        await slow.commit()
    assert await _seal(audit_source) == 1
    assert await _links(audit_source) == [(1, early), (2, late)]
    assert await _verify(audit_source) == ChainVerdict(ok=True, checked=2)


async def test_a_tampered_row_is_detected_with_its_id_sec_l_03(
    audit_source: ConnectionSource, audit_owner_engine: AsyncEngine
) -> None:
    ids = await _write(audit_source, 5)
    await _seal(audit_source)
    await _as_owner_without_guard(
        audit_owner_engine, "audit_log", "UPDATE audit_log SET outcome = 'failure' WHERE id = :id", id=ids[3]
    )
    assert await _verify(audit_source) == ChainVerdict(False, 3, ids[3], ChainProblem.HASH_MISMATCH)


async def test_a_deleted_row_is_detected_sec_l_03(
    audit_source: ConnectionSource, audit_owner_engine: AsyncEngine
) -> None:
    ids = await _write(audit_source, 5)
    await _seal(audit_source)
    await _as_owner_without_guard(audit_owner_engine, "audit_log", "DELETE FROM audit_log WHERE id = :id", id=ids[1])
    assert await _verify(audit_source) == ChainVerdict(False, 1, ids[1], ChainProblem.RECORD_MISSING)


async def test_a_rewritten_link_is_detected_sec_l_03(
    audit_source: ConnectionSource, audit_owner_engine: AsyncEngine
) -> None:
    ids = await _write(audit_source, 4)
    await _seal(audit_source)
    await _as_owner_without_guard(
        audit_owner_engine, "audit_chain", "UPDATE audit_chain SET hash_hex = :h WHERE seq = 3", h="ab" * 32
    )
    assert await _verify(audit_source) == ChainVerdict(False, 2, ids[2], ChainProblem.HASH_MISMATCH)


async def test_the_chain_hash_is_the_suites_sm3_or_sha256_sec_l_03(audit_source: ConnectionSource) -> None:
    await _write(audit_source, 3)
    factory = unit_of_work_factory(audit_source)
    assert await seal_audit(factory, Sm3(), now=LATER, grace_seconds=60, batch=2) == 3
    assert await verify_audit_chain(factory, Sm3(), batch=2) == ChainVerdict(ok=True, checked=3)
    assert (await verify_audit_chain(factory, SHA256, batch=2)).problem is ChainProblem.HASH_MISMATCH


async def test_concurrent_sealers_and_writers_make_one_chain_sec_l_03(audit_source: ConnectionSource) -> None:
    written: list[int] = []

    async def writer(n: int) -> None:
        for round_ in range(5):
            written.extend(await _write(audit_source, 3, start=100 * n + 10 * round_))
            await asyncio.sleep(0)

    async def sealer() -> int:
        sealed = 0
        for _ in range(8):
            sealed += await _seal(audit_source, grace=0, batch=4)
            await asyncio.sleep(0)
        return sealed

    results = await asyncio.gather(*(writer(n) for n in range(4)), sealer(), sealer())
    sealed_during = sum(r for r in results if isinstance(r, int))
    sealed_after = await _seal(audit_source, grace=0, batch=4)
    links = await _links(audit_source)
    assert sealed_during + sealed_after == len(written) == 60
    assert [seq for seq, _ in links] == list(range(1, 61))
    assert sorted(audit_id for _, audit_id in links) == sorted(written)
    assert await _verify(audit_source, batch=7) == ChainVerdict(ok=True, checked=60)


async def test_two_sealers_at_once_do_not_fork_the_chain_sec_l_03(audit_source: ConnectionSource) -> None:
    ids = await _write(audit_source, 40)
    counts = await asyncio.gather(*(_seal(audit_source, grace=0, batch=2) for _ in range(3)))
    assert sum(counts) + await _seal(audit_source, grace=0) == 40
    assert await _links(audit_source) == list(enumerate(ids, start=1))
    assert (await _verify(audit_source)).ok


# --- partitions and pruning (SEC-L-03, SEC-L-04) --------------------------------------------------------


async def _partition_of(conn: AsyncConnection, audit_id: int) -> str:
    value = await conn.scalar(
        sa.text("SELECT tableoid::regclass::text FROM audit_log WHERE id = :id"), {"id": audit_id}
    )
    return str(value)


async def test_inserts_years_ahead_and_far_in_the_past_succeed(uow_source: ConnectionSource) -> None:
    today = datetime.now(UTC)
    two_years = today + timedelta(days=730)
    async with SqlUnitOfWork(uow_source) as uow:
        ahead = await uow.audit.record(_event(20), now=two_years)
        beyond = await uow.audit.record(_event(21), now=today + timedelta(days=365 * 5))
        past = await uow.audit.record(_event(22), now=datetime(1990, 1, 1, tzinfo=UTC))
        assert await _partition_of(uow.connection, ahead) == partition_name(month_start(two_years))
        assert await _partition_of(uow.connection, beyond) == "audit_log_default"
        assert await _partition_of(uow.connection, past) == "audit_log_default"


async def test_ensure_partitions_adds_months_but_not_over_rows_in_the_default(
    audit_source: ConnectionSource, audit_owner_engine: AsyncEngine
) -> None:
    start = datetime(2031, 4, 10, tzinfo=UTC)
    await _write(audit_source, 1, at=datetime(2031, 5, 20, tzinfo=UTC))
    created = await ensure_partitions(audit_owner_engine, now=start, months_ahead=2)
    assert created == ["audit_log_y2031m04", "audit_log_y2031m06"]
    assert await ensure_partitions(audit_owner_engine, now=start, months_ahead=2) == []
    async with audit_owner_engine.connect() as conn:
        names = [p.name for p in await list_partitions(conn)]
        assert {"audit_log_y2031m04", "audit_log_y2031m06"} <= set(names)
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(sa.text("TRUNCATE audit_log_y2031m06"))


async def test_pruning_drops_only_sealed_old_partitions_and_keeps_the_chain_verifiable_sec_l_03_sec_l_04(
    audit_source: ConnectionSource, audit_owner_engine: AsyncEngine, audit_app_engine: AsyncEngine
) -> None:
    january = datetime(2021, 1, 10, tzinfo=UTC)
    assert await ensure_partitions(audit_owner_engine, now=january, months_ahead=2) == [
        "audit_log_y2021m01",
        "audit_log_y2021m02",
        "audit_log_y2021m03",
    ]
    cutoff = datetime(2021, 4, 1, tzinfo=UTC)
    old = [
        *await _write(audit_source, 2, at=january),
        *await _write(audit_source, 1, at=add_months(month_start(january), 1)),
        *await _write(audit_source, 1, at=add_months(month_start(january), 2)),
    ]
    recent = await _write(audit_source, 2, at=NOW)

    assert await drop_sealed_partitions(audit_owner_engine, before=cutoff, now=NOW) == []  # nothing sealed yet
    assert await _seal(audit_source) == 6
    with pytest.raises(RetentionError):
        await drop_sealed_partitions(audit_owner_engine, before=NOW - timedelta(days=30), now=NOW)
    with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
        await drop_sealed_partitions(audit_app_engine, before=cutoff, now=NOW)

    (late_march,) = await _write(audit_source, 1, at=datetime(2021, 3, 30, tzinfo=UTC))  # unsealed, in March
    dropped = await drop_sealed_partitions(audit_owner_engine, before=cutoff, now=NOW)
    assert dropped == ["audit_log_y2021m01", "audit_log_y2021m02"]

    async with audit_app_engine.connect() as conn:
        anchor = (await conn.execute(sa.select(audit_anchor))).mappings().one()
        assert (anchor["seq"], anchor["audit_id"], anchor["partitions"]) == (3, old[2], dropped)
        assert anchor["recorded_at"] == NOW
        remaining = await conn.scalar(sa.select(sa.func.min(audit_chain.c.seq)))
        assert remaining == 4
    assert await _verify(audit_source) == ChainVerdict(ok=True, checked=3)

    assert await _seal(audit_source) == 1
    assert await _links(audit_source) == [(4, old[3]), (5, recent[0]), (6, recent[1]), (7, late_march)]
    assert await _verify(audit_source, batch=2) == ChainVerdict(ok=True, checked=4)
    # March's rows hold seq 4 and 7, but seq 5 and 6 belong to rows that stay: March must wait.
    assert await drop_sealed_partitions(audit_owner_engine, before=cutoff, now=NOW) == []
    assert (await _verify(audit_source)).ok


# --- the embedded demo's SQLite -------------------------------------------------------------------------


async def test_the_same_repository_seals_and_verifies_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(DatabaseConfig(url=url))
    try:
        source = ConnectionSource(engine)
        ids = await _write(source, 4)
        assert await _seal(source, batch=3) == 4
        assert await _links(source) == list(enumerate(ids, start=1))
        assert await _verify(source) == ChainVerdict(ok=True, checked=4)
        assert await ensure_partitions(engine, now=NOW, months_ahead=2) == []
        assert await drop_sealed_partitions(engine, before=datetime(2021, 1, 1, tzinfo=UTC), now=NOW) == []
    finally:
        await engine.dispose()
