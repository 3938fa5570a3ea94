"""The unit of work commits only when told to, and the outbox rides in the same transaction (DESIGN D2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from persistence.db import ConnectionSource
from persistence.kernel.tables import outbox
from persistence.uow import SqlUnitOfWork, UnitOfWorkStateError

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


async def _count(source: ConnectionSource, topic: str) -> int:
    async with SqlUnitOfWork(source) as uow:
        value = await uow.connection.scalar(sa.select(sa.func.count()).where(outbox.c.topic == topic))
    return int(value or 0)


async def test_commit_keeps_the_outbox_message(uow_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(uow_source) as uow:
        await uow.outbox.add("test.committed", {"n": 1}, now=NOW)
        await uow.commit()
    assert await _count(uow_source, "test.committed") == 1


async def test_leaving_without_commit_rolls_back(uow_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(uow_source) as uow:
        await uow.outbox.add("test.forgotten", {"n": 1}, now=NOW)
    assert await _count(uow_source, "test.forgotten") == 0


async def test_an_exception_rolls_back_the_change_and_its_outbox_row(uow_source: ConnectionSource) -> None:
    async def fail() -> None:
        async with SqlUnitOfWork(uow_source) as uow:
            await uow.outbox.add("test.failed", {"n": 1}, now=NOW)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail()
    assert await _count(uow_source, "test.failed") == 0


async def test_commit_twice_is_refused(uow_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(uow_source) as uow:
        await uow.commit()
        with pytest.raises(UnitOfWorkStateError):
            await uow.commit()


async def test_committed_rows_are_seen_by_another_connection(committed_source: ConnectionSource) -> None:
    async with SqlUnitOfWork(committed_source) as uow:
        await uow.outbox.add("test.visible", {"n": 2}, now=NOW)
        await uow.commit()
    async with committed_source.engine.connect() as other:
        count = await other.scalar(sa.select(sa.func.count()).where(outbox.c.topic == "test.visible"))
    assert count == 1
    stored = await _first_payload(committed_source)
    assert stored == {"n": 2}


async def _first_payload(source: ConnectionSource) -> object:
    async with SqlUnitOfWork(source) as uow:
        return await uow.connection.scalar(sa.select(outbox.c.payload).where(outbox.c.topic == "test.visible"))
