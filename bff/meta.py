"""Public, unauthenticated facts the front ends need: the server's time (to correct a phone's clock)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import get
from litestar.datastructures import State

from bff.deps import BffDeps
from domain.kernel.clock import to_shanghai


class ServerTimeOut(msgspec.Struct, rename="camel"):
    now: datetime
    """The current instant in UTC."""
    local: str
    """The same instant in Asia/Shanghai, ISO-8601 with offset."""


@get(
    "/api/v1/meta/time",
    operation_id="metaTime",
    tags=["meta"],
    summary="Server time",
    description="The server's clock, for front ends to correct countdowns (payment deadlines, slot release).",
)
async def server_time(state: State) -> ServerTimeOut:
    deps: BffDeps = state.deps
    now = deps.clock.now()
    return ServerTimeOut(now=now, local=to_shanghai(now).isoformat())
