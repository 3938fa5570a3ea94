"""The outbox relay runs as a real Celery task on a real worker, with Redis and with RabbitMQ as the broker
(D10): messages written in one transaction reach their topic handler exactly once."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from domain.kernel.ids import new_id
from notifications import runtime as rt
from notifications.celery_app import CeleryTaskRunner, create_celery
from notifications.dispatch import TaskRunnerDispatcher
from notifications.registry import registry
from notifications.runtime import LoopThread, WorkerRuntime
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.uow import SqlUnitOfWork, unit_of_work_factory
from tests.conftest import MigratedDatabase

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
SEEN: list[str] = []
SEEN_LOCK = threading.Lock()
TOPIC = "test.celery_relay"

BROKERS = {
    "redis": os.environ.get("TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/1"),
    "rabbitmq": os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}


@registry.on_topic(TOPIC)
async def _record(runtime: WorkerRuntime, payload: Mapping[str, Any], message_id: str) -> None:
    with SEEN_LOCK:
        SEEN.append(message_id)


class Clock:
    def now(self) -> datetime:
        return NOW


class Digest:
    name = "sha256"

    def digest(self, data: bytes) -> bytes:
        import hashlib

        return hashlib.sha256(data).digest()


@pytest.fixture(params=sorted(BROKERS))
def celery_setup(request: pytest.FixtureRequest, test_database: MigratedDatabase) -> Iterator[tuple[Any, LoopThread]]:
    queue = f"hsp-test-{new_id()}"
    # A solo worker in a thread has no event hub: with AMQP heartbeats on, each poll waits out the heartbeat
    # interval (about 10 s per test). Production workers (prefork, with the hub) keep heartbeats.
    app = create_celery(BROKERS[request.param], default_queue=queue, visibility_timeout_seconds=30, broker_heartbeat=0)
    loop = LoopThread()
    engine = create_engine(DatabaseConfig(url=test_database.app_url, pool_size=2, max_overflow=2))
    runner = CeleryTaskRunner(app)
    runtime = WorkerRuntime(
        clock=Clock(),
        uow_factory=unit_of_work_factory(ConnectionSource(engine)),
        dispatcher=TaskRunnerDispatcher(runner),
        runner=runner,
        digest=Digest(),
    )
    rt.install(runtime, loop)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues=[queue]):
        yield app, loop
    loop.run(engine.dispose())
    loop.stop()


async def test_relay_through_a_real_worker_delivers_each_message_once(
    celery_setup: tuple[Any, LoopThread], committed_source: ConnectionSource
) -> None:
    app, _ = celery_setup
    with SEEN_LOCK:
        SEEN.clear()
    ids = []
    async with SqlUnitOfWork(committed_source) as uow:
        for i in range(5):
            ids.append(await uow.outbox.add(TOPIC, {"i": i}, now=NOW))
        await uow.commit()
    runner = CeleryTaskRunner(app)
    # Two relays queued at once: the worker runs both; the second finds nothing left.
    await runner.enqueue("outbox.relay", {})
    await runner.enqueue("outbox.relay", {})
    for _ in range(200):
        with SEEN_LOCK:
            if len(SEEN) >= len(ids):
                break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a duplicate, if any, would arrive now
    with SEEN_LOCK:
        counts = Counter(SEEN)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
