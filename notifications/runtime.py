"""The worker runtime: the adapters a task needs (set by bootstrap at worker start) and one event loop per
worker process, run in its own thread so that tasks from any Celery pool reach the same loop (D10)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from domain.kernel.clock import Clock, ClockControl
from domain.kernel.crypto import Digest
from domain.kernel.outbox import OutboxDispatcher
from domain.kernel.tasks import TaskRunner
from domain.kernel.uow import UnitOfWorkFactory

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    clock: Clock
    uow_factory: UnitOfWorkFactory
    dispatcher: OutboxDispatcher
    runner: TaskRunner
    digest: Digest
    clock_control: ClockControl | None = None
    idempotency_purge: Any = None
    """``IdempotencyStore.purge_expired``-shaped callable, when configured."""
    services: dict[str, Any] = field(default_factory=dict)
    """Feature adapters by name, added as features arrive."""
    audit_grace_seconds: int = 60


class LoopThread:
    """An event loop running forever in a daemon thread; ``run`` submits a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hsp-worker-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


_state: dict[str, Any] = {}


def install(runtime: WorkerRuntime, loop: LoopThread | None) -> None:
    """Install a ready runtime in this process (tests, the demo)."""
    _state.update(runtime=runtime, loop=loop, pid=os.getpid())


def install_factory(factory: Callable[[], WorkerRuntime]) -> None:
    """Install how to build the runtime; each worker process builds its own on first use (after a fork,
    connections and loops of the parent must not be shared)."""
    _state["factory"] = factory


def _ensure() -> None:
    if _state.get("pid") == os.getpid() and _state.get("runtime") is not None:
        return
    factory = _state.get("factory")
    if factory is None:
        raise RuntimeError("the worker runtime is not installed (bootstrap sets it at worker start)")
    _state.update(runtime=factory(), loop=LoopThread(), pid=os.getpid())


def current() -> WorkerRuntime:
    _ensure()
    runtime = _state["runtime"]
    assert isinstance(runtime, WorkerRuntime)
    return runtime


def loop_thread() -> LoopThread:
    _ensure()
    loop = _state.get("loop")
    if loop is None:
        raise RuntimeError("no worker loop in this process")
    assert isinstance(loop, LoopThread)
    return loop
