"""Recording and inbound fault injection, applied to each simulator's router (never to the admin router)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware

from sandbox.framework.faults import InboundFaults, chance

if TYPE_CHECKING:
    from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

    from sandbox.framework.context import SimulatorContext


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already read body once, then defers to the server's."""
    given = False

    async def replayed() -> ReceiveMessage:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _hold(seconds: float, receive: Receive) -> None:
    """Wait ``seconds`` of wall time, or until the client disconnects."""
    disconnect = asyncio.ensure_future(receive())
    try:
        await asyncio.wait({disconnect}, timeout=seconds)
    finally:
        disconnect.cancel()


async def _answer_error(send: Send, plan: InboundFaults) -> None:
    body = plan.error_body.encode("utf-8") if plan.error_body is not None else b""
    headers = [(b"content-length", str(len(body)).encode("ascii"))]
    if body:
        headers.append((b"content-type", plan.error_content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": plan.error_status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class SimulatorMiddleware(ASGIMiddleware):
    """Records every request reaching the simulator's routes and applies its inbound fault plan."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, simulator: SimulatorContext, mount: str) -> None:
        self._sim = simulator
        self._mount = mount.rstrip("/")

    def __deepcopy__(self, memo: dict[int, Any]) -> SimulatorMiddleware:
        # Litestar deep-copies a router when it is registered; the copy must keep the live context.
        return self

    def _vendor_path(self, path: str) -> str:
        if self._mount and path.startswith(self._mount):
            return path[len(self._mount) :] or "/"
        return path

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        http_scope = cast("HTTPScope", scope)
        body = await _read_body(receive)
        path = self._vendor_path(http_scope["path"])
        headers: dict[str, str] = {}
        for raw_name, raw_value in http_scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        plan = self._sim.faults.inbound
        applied: list[str] = []
        latency = hold = fail = False
        if plan.applies_to(path):
            rng = self._sim.fault_random
            latency = plan.latency_ms > 0
            hold = chance(rng, plan.timeout_rate)
            fail = chance(rng, plan.error_rate)
            applied = [fault for fault, on in (("latency", latency), ("timeout", hold), ("error", fail)) if on]

        record = self._sim.recorder.record_request(
            method=http_scope["method"],
            path=path,
            query=http_scope["query_string"].decode("latin-1"),
            headers=headers,
            body=body,
            faults=applied,
        )

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            if latency:
                await asyncio.sleep(plan.latency_ms / 1000)
            if hold:
                await _hold(plan.timeout_seconds, receive)
            if fail:
                await _answer_error(recording_send, plan)
            else:
                await next_app(scope, _replay(body, receive), recording_send)
        finally:
            record.elapsed_ms = (time.perf_counter() - started) * 1000
