"""The outbox is written in the same transaction as the change and relayed exactly once, even when two
relays run at the same time on PostgreSQL (DESIGN D2)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

import sqlalchemy as sa

from domain.kernel.outbox import OutboxMessage
from domain.kernel.relay import relay_outbox
from persistence.db import ConnectionSource
from persistence.kernel.tables import outbox
from persistence.uow import SqlUnitOfWork, unit_of_work_factory

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


class RecordingDispatcher:
    def __init__(self, *, pause: float = 0.0) -> None:
        self.seen: list[str] = []
        self.pause = pause

    async def dispatch(self, message: OutboxMessage) -> None:
        if self.pause:
            await asyncio.sleep(self.pause)  # hold the row locks while the other relay runs
        self.seen.append(message.id)


async def _write(source: ConnectionSource, n: int) -> list[str]:
    ids = []
    async with SqlUnitOfWork(source) as uow:
        for i in range(n):
            ids.append(await uow.outbox.add("test.event", {"i": i}, now=NOW, key=f"k{i}"))
        await uow.commit()
    return ids


async def test_two_relays_at_once_relay_each_message_exactly_once(committed_source: ConnectionSource) -> None:
    ids = await _write(committed_source, 60)
    factory = unit_of_work_factory(committed_source)
    first, second = RecordingDispatcher(pause=0.001), RecordingDispatcher(pause=0.001)

    async def drain(dispatcher: RecordingDispatcher) -> None:
        while await relay_outbox(factory, dispatcher, NOW, batch_size=7):
            pass

    await asyncio.gather(drain(first), drain(second))
    counts = Counter(first.seen + second.seen)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert first.seen, "both relays took part (SKIP LOCKED let them share the work)"
    assert second.seen
    async with committed_source.engine.connect() as conn:
        pending = await conn.scalar(sa.select(sa.func.count()).where(outbox.c.relayed_at.is_(None)))
    assert pending == 0


async def test_a_dispatch_failure_rolls_back_the_whole_batch(committed_source: ConnectionSource) -> None:
    ids = await _write(committed_source, 3)
    factory = unit_of_work_factory(committed_source)

    class Failing(RecordingDispatcher):
        async def dispatch(self, message: OutboxMessage) -> None:
            if len(self.seen) == 2:
                raise ConnectionError("broker down")
            await super().dispatch(message)

    failing = Failing()
    with contextlib.suppress(ConnectionError):
        await relay_outbox(factory, failing, NOW)
    retry = RecordingDispatcher()
    assert await relay_outbox(factory, retry, NOW) == 3
    assert retry.seen == ids, "nothing was marked relayed by the failed run; order is the write order"


async def test_messages_due_later_wait(committed_source: ConnectionSource) -> None:
    factory = unit_of_work_factory(committed_source)
    async with SqlUnitOfWork(committed_source) as uow:
        message_id = await uow.outbox.add("test.later", {}, now=NOW)
        await uow.outbox.mark_failed(message_id, now=NOW, retry_at=NOW.replace(hour=3), error="x")
        await uow.commit()
    early = RecordingDispatcher()
    assert await relay_outbox(factory, early, NOW) == 0
    late = RecordingDispatcher()
    assert await relay_outbox(factory, late, NOW.replace(hour=4)) == 1
