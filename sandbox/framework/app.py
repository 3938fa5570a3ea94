"""Mounting simulators: standalone (``build_sandbox_app``) or inside the product's app
(``sandbox_route_handlers``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from litestar import Litestar, Router
from litestar.di import Provide

from sandbox.framework.admin import admin_router
from sandbox.framework.context import SandboxContext
from sandbox.framework.middleware import SimulatorMiddleware
from sandbox.framework.simulator import Simulator


def _provider(simulator: Simulator) -> Provide:
    async def provide() -> Simulator:
        return simulator

    return Provide(provide)


def simulator_router(simulator: Simulator, ctx: SandboxContext, prefix: str = "/sandbox") -> Router:
    """One simulator's routes under ``<prefix>/<name>``, recorded and fault-injected."""
    context = ctx.register(simulator)
    mount = f"{prefix.rstrip('/')}/{simulator.name}"
    return Router(
        path=mount,
        route_handlers=list(simulator.route_handlers()),
        middleware=[SimulatorMiddleware(context, mount)],
        dependencies={"simulator": _provider(simulator)},
        tags=[f"sandbox:{simulator.name}"],
    )


def sandbox_route_handlers(
    simulators: Sequence[Simulator], ctx: SandboxContext, prefix: str = "/sandbox"
) -> list[Router]:
    """The routers of every simulator plus the admin router, for mounting in any Litestar app.

    The host app should also run ``ctx.running()`` in its lifespan, for the periodic pump and a clean stop.
    """
    routers = [simulator_router(simulator, ctx, prefix) for simulator in simulators]
    routers.append(admin_router(ctx, f"{prefix.rstrip('/')}/admin"))
    return routers


def build_sandbox_app(
    simulators: Sequence[Simulator],
    ctx: SandboxContext,
    *,
    prefix: str = "/sandbox",
    pump_interval: float | None = 1.0,
    debug: bool = False,
) -> Litestar:
    """A standalone app serving the simulators and the admin routes.

    With ``pump_interval``, due callbacks are also delivered every that many seconds of wall time (for
    clocks that move with wall time); ``POST <prefix>/admin/clock`` always pumps after advancing.
    """

    def lifespan(app: Litestar) -> AbstractAsyncContextManager[None]:
        return ctx.running(pump_interval)

    return Litestar(
        route_handlers=sandbox_route_handlers(simulators, ctx, prefix),
        lifespan=[lifespan],
        debug=debug,
    )
