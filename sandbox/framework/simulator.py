"""The base every simulator derives from."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from litestar.types import ControllerRouterHandler

if TYPE_CHECKING:
    from sandbox.framework.context import SimulatorContext


class Simulator(abc.ABC):
    """A simulated outside system: a name, its vendor routes, and a seed hook.

    The framework mounts ``route_handlers()`` under ``/sandbox/<name>``, behind the recording and
    fault-injection middleware, with the simulator itself injected into handlers as the ``simulator``
    dependency (annotate it ``NamedDependency[<the concrete class>]``). ``ctx`` is available once the
    simulator is registered.
    """

    name: str

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        if not getattr(self, "name", None):
            raise TypeError(f"{type(self).__name__} needs a name")
        self._ctx: SimulatorContext | None = None

    @property
    def ctx(self) -> SimulatorContext:
        if self._ctx is None:
            raise RuntimeError(f"simulator {self.name!r} is not registered with a SandboxContext")
        return self._ctx

    def bind(self, ctx: SimulatorContext) -> None:
        """Called once by ``SandboxContext.register``."""
        if self._ctx is not None and self._ctx is not ctx:
            raise RuntimeError(f"simulator {self.name!r} is already bound to another sandbox")
        self._ctx = ctx

    @abc.abstractmethod
    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        """The vendor routes, with paths relative to the simulator's mount."""

    def seed(self, seed: int) -> None:
        """Reset the simulator's own state deterministically.

        Called at registration and by ``POST /sandbox/admin/{name}/seed``, after ``ctx.random`` and
        ``ctx.fault_random`` were reseeded and queued callbacks dropped. Override it when the simulator keeps
        state (orders, inboxes, counters).
        """
        return None
