"""The Celery app (D10): Redis broker by default, RabbitMQ by an amqp:// URL; JSON only; ``acks_late``;
each task runs its coroutine on the worker process's one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.schedules import schedule as every

from notifications import runtime as rt
from notifications.registry import registry
from notifications.schedule import SCHEDULE
from notifications.tasks import run_task


def create_celery(
    broker_url: str,
    *,
    default_queue: str = "hsp",
    visibility_timeout_seconds: int = 3600,
    eager: bool = False,
    broker_heartbeat: float | None = None,
) -> Celery:
    app = Celery("hsp", broker=broker_url, set_as_current=False)
    transport_options: dict[str, Any] = {}
    if broker_url.startswith(("redis://", "rediss://")):
        transport_options["visibility_timeout"] = visibility_timeout_seconds
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=default_queue,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_heartbeat=broker_heartbeat,
        timezone="UTC",
        enable_utc=True,
        task_always_eager=eager,
        beat_schedule={
            entry.name: {"task": entry.task, "schedule": every(entry.every_seconds), "kwargs": dict(entry.kwargs)}
            for entry in SCHEDULE
        },
    )
    for name in registry.tasks:
        _register(app, name)
    return app


def _register(app: Celery, name: str) -> None:
    @app.task(name=name, acks_late=True, bind=False, ignore_result=True)
    def _task(**kwargs: Any) -> Any:
        return rt.loop_thread().run(run_task(rt.current(), name, kwargs))


class CeleryTaskRunner:
    """Implements TaskRunner by publishing to the broker (off the event loop: kombu is blocking)."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    async def enqueue(self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None) -> None:
        await asyncio.to_thread(self._app.send_task, task, kwargs=dict(kwargs), countdown=countdown_seconds)
