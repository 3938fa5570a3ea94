"""Outbox dispatch through the task runner, and the demo's in-process task runner and beat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from domain.kernel.clock import Clock
from domain.kernel.outbox import OutboxMessage
from domain.kernel.tasks import TaskRunner

log = structlog.get_logger("worker")


class TaskRunnerDispatcher:
    """Implements OutboxDispatcher: each message becomes one ``outbox.dispatch`` task."""

    def __init__(self, runner: TaskRunner) -> None:
        self._runner = runner

    async def dispatch(self, message: OutboxMessage) -> None:
        await self._runner.enqueue(
            "outbox.dispatch",
            {"message_id": message.id, "topic": message.topic, "payload": dict(message.payload), "key": message.key},
        )


class InProcessTaskRunner:
    """The demo's task runner (D10): awaits tasks on the app's own loop, in the background."""

    def __init__(self, runtime_provider: Callable[[], Any]) -> None:
        self._runtime_provider = runtime_provider
        self._pending: set[asyncio.Task[Any]] = set()

    async def enqueue(self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None) -> None:
        from notifications.tasks import run_task

        async def _run() -> None:
            if countdown_seconds:
                await asyncio.sleep(countdown_seconds)
            try:
                await run_task(self._runtime_provider(), task, dict(kwargs))
            except Exception as exc:  # noqa: BLE001  (logged and counted; the beat retries what matters)
                log.warning("inprocess_task_failed", task=task, error_type=type(exc).__name__)

        handle = asyncio.get_running_loop().create_task(_run())
        self._pending.add(handle)
        handle.add_done_callback(self._pending.discard)

    async def drain(self, limit_seconds: float = 10.0) -> None:
        """Wait for what is running now (tests and shutdown)."""
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while self._pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(list(self._pending), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    task: str
    every_seconds: float
    kwargs: Mapping[str, Any]

    @property
    def name(self) -> str:
        """Unique per task and arguments (one task may be scheduled with different arguments)."""
        args = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.task}({args})"


class InProcessBeat:
    """The demo's beat: fires each entry when the (possibly offset) clock has moved past its period."""

    def __init__(self, entries: list[ScheduleEntry], runner: TaskRunner, clock: Clock, *, tick: float = 1.0) -> None:
        self._entries = entries
        self._runner = runner
        self._clock = clock
        self._tick = tick
        self._last: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def fire_due(self) -> list[str]:
        now = self._clock.now()
        fired = []
        for entry in self._entries:
            last = self._last.get(entry.name)
            if last is None or (now - last).total_seconds() >= entry.every_seconds:
                self._last[entry.name] = now
                await self._runner.enqueue(entry.task, entry.kwargs)
                fired.append(entry.task)
        return fired

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception as exc:  # noqa: BLE001
                log.warning("beat_failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._tick)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
