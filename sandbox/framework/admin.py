"""Admin routes of the sandbox, mounted at ``/sandbox/admin``: the shared clock, seeds, faults, recordings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from sandbox.framework.context import SandboxContext, UnknownSimulatorError
from sandbox.framework.faults import NO_FAULTS, FaultPlan
from sandbox.framework.records import REQUESTS, Record

PROBLEM_JSON = "application/problem+json"


class AdvanceClockIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    advance_seconds: Annotated[float, msgspec.Meta(ge=0.0)]


class ClockOut(msgspec.Struct, rename="camel", kw_only=True):
    now: datetime
    offset_seconds: float
    callback_attempts: int = 0
    """How many callback attempts the pump made after the advance."""


class SeedIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    seed: int


class SeedOut(msgspec.Struct, rename="camel", kw_only=True):
    simulator: str
    seed: int


class RecordsOut(msgspec.Struct, rename="camel", kw_only=True):
    simulator: str
    stream: str
    streams: list[str]
    entries: list[Record]


@get("/clock")
async def read_clock(sandbox: NamedDependency[SandboxContext]) -> ClockOut:
    await sandbox.clock.sync()
    return ClockOut(now=sandbox.clock.now(), offset_seconds=sandbox.clock.offset_seconds)


@post("/clock", status_code=200)
async def advance_clock(data: JSONBody[AdvanceClockIn], sandbox: NamedDependency[SandboxContext]) -> ClockOut:
    now, attempts = await sandbox.advance(data.advance_seconds)
    return ClockOut(now=now, offset_seconds=sandbox.clock.offset_seconds, callback_attempts=attempts)


@post("/{simulator:str}/seed", status_code=200)
async def seed_simulator(
    simulator: FromPath[str], data: JSONBody[SeedIn], sandbox: NamedDependency[SandboxContext]
) -> SeedOut:
    sandbox.seed(simulator, data.seed)
    return SeedOut(simulator=simulator, seed=data.seed)


@get("/{simulator:str}/faults")
async def read_faults(simulator: FromPath[str], sandbox: NamedDependency[SandboxContext]) -> FaultPlan:
    return sandbox.context(simulator).faults


@put("/{simulator:str}/faults")
async def replace_faults(
    simulator: FromPath[str], data: JSONBody[FaultPlan], sandbox: NamedDependency[SandboxContext]
) -> FaultPlan:
    sandbox.context(simulator).faults = data
    return data


@delete("/{simulator:str}/faults")
async def clear_faults(simulator: FromPath[str], sandbox: NamedDependency[SandboxContext]) -> None:
    sandbox.context(simulator).faults = NO_FAULTS


@get("/{simulator:str}/requests")
async def read_records(
    simulator: FromPath[str],
    sandbox: NamedDependency[SandboxContext],
    stream: FromQuery[str] = REQUESTS,
    limit: Annotated[int | None, QueryParameter(ge=0)] = None,
) -> RecordsOut:
    recorder = sandbox.context(simulator).recorder
    return RecordsOut(
        simulator=simulator, stream=stream, streams=recorder.streams(), entries=recorder.entries(stream, limit)
    )


@delete("/{simulator:str}/requests")
async def clear_records(
    simulator: FromPath[str], sandbox: NamedDependency[SandboxContext], stream: FromQuery[str | None] = None
) -> None:
    sandbox.context(simulator).recorder.clear(stream)


def _unknown_simulator(request: Request[Any, Any, Any], exc: UnknownSimulatorError) -> Response[Any]:
    return Response(
        content={
            "type": "about:blank",
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
            "code": exc.code,
            "message": exc.message,
        },
        status_code=exc.status,
        media_type=PROBLEM_JSON,
    )


def admin_router(sandbox: SandboxContext, path: str = "/sandbox/admin") -> Router:
    """The admin router for ``sandbox``; it sees every simulator registered there."""
    return Router(
        path=path,
        route_handlers=[
            read_clock,
            advance_clock,
            seed_simulator,
            read_faults,
            replace_faults,
            clear_faults,
            read_records,
            clear_records,
        ],
        dependencies={"sandbox": Provide(lambda: sandbox, sync_to_thread=False)},
        exception_handlers={UnknownSimulatorError: _unknown_simulator},
        tags=["sandbox"],
    )
