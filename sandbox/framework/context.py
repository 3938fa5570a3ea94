"""What simulators share (the clock) and what each keeps (generators, recorder, faults, callbacks)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from domain.kernel.clock import ClockControl
from domain.kernel.errors import NotFoundError
from sandbox.framework.callbacks import CallbackDispatcher
from sandbox.framework.faults import NO_FAULTS, FaultPlan
from sandbox.framework.records import Recorder

if TYPE_CHECKING:
    from sandbox.framework.simulator import Simulator

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
RESERVED_NAMES = frozenset({"admin"})


class UnknownSimulatorError(NotFoundError):
    code = "sandbox.unknown_simulator"
    message = "模拟器不存在"


class SimulatorContext:
    """What one simulator sees: the shared clock plus its own random, recorder, fault plan and callbacks.

    ``random`` is for the simulator's own data (ids, nonces); fault decisions draw from ``fault_random``, so
    that vendor logic does not shift the fault sequence. Both are reseeded by ``reseed``.
    """

    def __init__(self, sandbox: SandboxContext, name: str) -> None:
        self.name = name
        self.sandbox = sandbox
        self.clock: ClockControl = sandbox.clock
        # Reproducible simulation, not secrets: a seeded generator is the point.
        self.random = random.Random()  # noqa: S311
        self.fault_random = random.Random()  # noqa: S311
        self.recorder = Recorder(sandbox.clock, sandbox.record_capacity)
        self.faults: FaultPlan = NO_FAULTS
        self.callbacks = CallbackDispatcher(
            name=name,
            clock=sandbox.clock,
            recorder=self.recorder,
            rng=self.fault_random,
            faults=lambda: self.faults.callbacks,
            timeout=sandbox.callback_timeout,
        )
        self.seed_value = 0

    def reseed(self, seed: int) -> None:
        """Reseed both generators and drop queued callbacks; the recorder and the fault plan stay."""
        self.seed_value = seed
        self.random.seed(f"{self.name}:{seed}:data")
        self.fault_random.seed(f"{self.name}:{seed}:faults")
        self.callbacks.clear()


class SandboxContext:
    """The simulators of one sandbox and the clock they share.

    The clock is any ``ClockControl``; the sandbox keeps no offset of its own, so the product, its workers
    and the simulators agree on the time as long as they are handed clocks reading the same offset store.
    """

    def __init__(
        self,
        clock: ClockControl,
        *,
        record_capacity: int = 1000,
        callback_timeout: float = 5.0,
        default_seed: int = 0,
    ) -> None:
        self.clock = clock
        self.record_capacity = record_capacity
        self.callback_timeout = callback_timeout
        self.default_seed = default_seed
        self._simulators: dict[str, Simulator] = {}
        self._contexts: dict[str, SimulatorContext] = {}

    def register(self, simulator: Simulator) -> SimulatorContext:
        """Bind a simulator to its own context and seed it with ``default_seed`` (idempotent per object)."""
        name = simulator.name
        existing = self._simulators.get(name)
        if existing is simulator:
            return self._contexts[name]
        if existing is not None:
            raise ValueError(f"a simulator named {name!r} is already registered")
        if not _NAME.match(name) or name in RESERVED_NAMES:
            raise ValueError(f"bad simulator name {name!r}: lowercase letters, digits and '-', not 'admin'")
        context = SimulatorContext(self, name)
        self._simulators[name] = simulator
        self._contexts[name] = context
        simulator.bind(context)
        self.seed(name, self.default_seed)
        return context

    @property
    def names(self) -> list[str]:
        return sorted(self._simulators)

    def simulator(self, name: str) -> Simulator:
        try:
            return self._simulators[name]
        except KeyError:
            raise UnknownSimulatorError(f"no simulator named {name!r}") from None

    def context(self, name: str) -> SimulatorContext:
        try:
            return self._contexts[name]
        except KeyError:
            raise UnknownSimulatorError(f"no simulator named {name!r}") from None

    def seed(self, name: str, seed: int) -> None:
        """Reseed a simulator's generators, drop its queued callbacks, then call its ``seed`` hook."""
        simulator = self.simulator(name)
        self._contexts[name].reseed(seed)
        simulator.seed(seed)

    async def pump(self) -> int:
        """Deliver the due callbacks of every simulator; returns the number of attempts."""
        attempts = 0
        for name in self.names:
            attempts += await self._contexts[name].callbacks.deliver_due()
        return attempts

    async def advance(self, seconds: float) -> tuple[datetime, int]:
        """Advance the shared clock, then deliver what fell due; returns the new time and the attempts."""
        now = await self.clock.advance(seconds)
        return now, await self.pump()

    async def pump_periodically(self, interval: float) -> None:
        """Reload the clock offset and pump, every ``interval`` seconds of wall time, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.clock.sync()
            await self.pump()

    @asynccontextmanager
    async def running(self, pump_interval: float | None = 1.0) -> AsyncIterator[None]:
        """Lifespan of the sandbox: a periodic pump while open (``None`` or 0: none), background deliveries
        cancelled at exit."""
        task = asyncio.create_task(self.pump_periodically(pump_interval)) if pump_interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await self.aclose()

    async def wait_idle(self) -> None:
        """Wait for every background delivery started by a ``send``."""
        for context in self._contexts.values():
            await context.callbacks.wait_idle()

    async def aclose(self) -> None:
        for context in self._contexts.values():
            await context.callbacks.aclose()
