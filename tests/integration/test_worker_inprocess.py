"""The demo's in-process task runner and beat run the same registered tasks as Celery (D10, D11), and the
worker's metrics reach /metrics (task outcomes, outbox lag)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from notifications.dispatch import InProcessBeat, InProcessTaskRunner, ScheduleEntry, TaskRunnerDispatcher
from notifications.registry import registry
from notifications.runtime import WorkerRuntime
from persistence.db import ConnectionSource
from persistence.kernel.tables import outbox
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.support.app import FixedClock, asgi_client, build_test_apps

TOPIC = "test.inprocess"
SEEN: list[str] = []


@registry.on_topic(TOPIC)
async def _seen(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    SEEN.append(message_id)


class Sha256:
    name = "sha256"

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()


def _runtime(source: ConnectionSource, clock: FixedClock) -> tuple[WorkerRuntime, InProcessTaskRunner]:
    holder: dict[str, WorkerRuntime] = {}
    runner = InProcessTaskRunner(lambda: holder["rt"])
    runtime = WorkerRuntime(
        clock=clock,
        uow_factory=unit_of_work_factory(source),
        dispatcher=TaskRunnerDispatcher(runner),
        runner=runner,
        digest=Sha256(),
    )
    holder["rt"] = runtime
    return runtime, runner


async def test_the_in_process_beat_relays_the_outbox_on_the_moving_clock(committed_source: ConnectionSource) -> None:
    SEEN.clear()
    clock = FixedClock(datetime(2026, 11, 22, 1, 0, tzinfo=UTC))
    _, runner = _runtime(committed_source, clock)
    async with SqlUnitOfWork(committed_source) as uow:
        ids = [await uow.outbox.add(TOPIC, {"n": i}, now=clock.now()) for i in range(3)]
        await uow.commit()
    beat = InProcessBeat([ScheduleEntry("outbox.relay", 60.0, {})], runner, clock)
    assert await beat.fire_due() == ["outbox.relay"]
    await runner.drain()
    await runner.drain()  # the relay enqueued one dispatch task per message
    assert sorted(SEEN) == sorted(ids)
    assert await beat.fire_due() == [], "not due again until the clock moves"
    clock.advance(61)
    assert await beat.fire_due() == ["outbox.relay"]
    await runner.drain()
    assert sorted(SEEN) == sorted(ids), "relayed once"
    async with committed_source.engine.connect() as conn:
        pending = await conn.scalar(sa.select(sa.func.count()).where(outbox.c.relayed_at.is_(None)))
    assert pending == 0


async def test_metrics_show_task_outcomes_and_outbox_lag(committed_source: ConnectionSource) -> None:
    clock = FixedClock(datetime(2026, 11, 22, 1, 0, tzinfo=UTC))
    _, runner = _runtime(committed_source, clock)
    await runner.enqueue("idempotency.purge", {})
    await runner.drain()
    async with SqlUnitOfWork(committed_source) as uow:
        await uow.outbox.add("test.lagging", {}, now=clock.now())
        await uow.commit()
    clock.advance(42)
    _, admin, deps = build_test_apps(committed_source, clock=clock)

    async def refresh() -> None:
        from notifications.metrics import OUTBOX_LAG

        async with deps.uow_factory() as uow:
            oldest = await uow.outbox.oldest_pending_at()
        OUTBOX_LAG.set(0 if oldest is None else (clock.now() - oldest).total_seconds())

    deps.metrics_refresh = refresh
    async with asgi_client(admin) as client:
        text = (await client.get("/metrics")).text
    assert 'hsp_task_runs_total{outcome="ok",task="idempotency.purge"}' in text
    lag = next(line for line in text.splitlines() if line.startswith("hsp_outbox_lag_seconds "))
    assert float(lag.split()[1]) >= 42
