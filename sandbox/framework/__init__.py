"""The framework every simulator in ``sandbox`` is built on.

A simulator (``Simulator``) brings its vendor routes and a seed hook; the framework mounts it under
``/sandbox/<name>`` behind a middleware that records every request and applies the fault plan, gives it a
``SimulatorContext`` (the shared clock, seeded generators, a recorder, the fault plan, an outbound callback
dispatcher), and serves the admin routes at ``/sandbox/admin``. ``sandbox/echo.py`` is the template.
"""

from sandbox.framework.app import build_sandbox_app, sandbox_route_handlers, simulator_router
from sandbox.framework.callbacks import CallbackDispatcher, IsSuccess, is_2xx
from sandbox.framework.context import SandboxContext, SimulatorContext, UnknownSimulatorError
from sandbox.framework.faults import NO_FAULTS, CallbackFaults, FaultPlan, InboundFaults
from sandbox.framework.records import (
    CALLBACKS,
    REQUESTS,
    CallbackRecord,
    MessageRecord,
    Record,
    Recorder,
    RequestRecord,
)
from sandbox.framework.server import run_standalone
from sandbox.framework.simulator import Simulator

__all__ = [
    "CALLBACKS",
    "NO_FAULTS",
    "REQUESTS",
    "CallbackDispatcher",
    "CallbackFaults",
    "CallbackRecord",
    "FaultPlan",
    "InboundFaults",
    "IsSuccess",
    "MessageRecord",
    "Record",
    "Recorder",
    "RequestRecord",
    "SandboxContext",
    "Simulator",
    "SimulatorContext",
    "UnknownSimulatorError",
    "build_sandbox_app",
    "is_2xx",
    "run_standalone",
    "sandbox_route_handlers",
    "simulator_router",
]
