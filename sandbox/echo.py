"""The echo simulator: the framework's test subject and the template for real simulators.

It speaks no vendor's protocol. ``POST /sandbox/echo/echo`` answers the JSON it got with the shared clock's
time, a serial number and a nonce from the seeded generator (both reset by seeding), and records the body in
the ``echoed`` stream; ``POST /sandbox/echo/notify`` sends an outbound callback through the dispatcher.

A real simulator follows the same shape: module-level handlers that take
``simulator: NamedDependency[<ItsClass>]`` (injected by the framework); state kept on the simulator object
and reset in ``seed``; time read from ``simulator.ctx.clock``; ids drawn from ``simulator.ctx.random``;
deliveries recorded with ``simulator.ctx.recorder.record_message``; notifications sent with
``simulator.ctx.callbacks.send``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import httpx
import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler

from sandbox.framework import Simulator

ECHOED = "echoed"


class EchoOut(msgspec.Struct, rename="camel", kw_only=True):
    received: Any
    now: datetime
    serial: int
    nonce: str


class NotifyIn(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    url: str
    body: Any = None
    """Sent JSON-encoded."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    retry_schedule: list[Annotated[float, msgspec.Meta(ge=0.0)]] = msgspec.field(default_factory=list)
    """Seconds of shared-clock time before each retry."""
    success_text: str | None = None
    """When set, an attempt succeeds only if the 2xx answer's body contains this text."""


class NotifyOut(msgspec.Struct, rename="camel", kw_only=True):
    callback_id: str


class EchoSimulator(Simulator):
    name = "echo"

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.serial = 0

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        return [echo, notify]

    def seed(self, seed: int) -> None:
        self.serial = 0


@post("/echo", status_code=200)
async def echo(data: JSONBody[Any], simulator: NamedDependency[EchoSimulator]) -> EchoOut:
    ctx = simulator.ctx
    simulator.serial += 1
    ctx.recorder.record_message(ECHOED, data)
    return EchoOut(
        received=data,
        now=ctx.clock.now(),
        serial=simulator.serial,
        nonce=f"{ctx.random.getrandbits(64):016x}",
    )


@post("/notify", status_code=202)
async def notify(data: JSONBody[NotifyIn], simulator: NamedDependency[EchoSimulator]) -> NotifyOut:
    success_text = data.success_text

    def acknowledged(response: httpx.Response) -> bool:
        return response.is_success and (success_text is None or success_text in response.text)

    callback_id = await simulator.ctx.callbacks.send(
        data.url,
        msgspec.json.encode(data.body),
        {"content-type": "application/json", **data.headers},
        retry_schedule=data.retry_schedule,
        is_success=acknowledged,
    )
    return NotifyOut(callback_id=callback_id)
