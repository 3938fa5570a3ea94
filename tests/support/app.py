"""Building the real edge (bff.create_app) around real adapters for HTTP tests, plus probe routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import msgspec
from litestar import Litestar, Request, Router, post
from litestar.datastructures import State
from litestar.params import JSONBody

from bff.app import create_admin_app, create_app
from bff.auth.guards import current_principal
from bff.deps import BffDeps, EdgeConfig
from domain.kernel.errors import AuthenticationError, ConflictError
from domain.kernel.principal import Principal, PrincipalKind
from domain.kernel.ratelimit import RateLimiter
from persistence.db import ConnectionSource
from persistence.kernel.idempotency import SqlIdempotencyStore
from persistence.uow import unit_of_work_factory


class FixedClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 22, 2, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class TokenAuthenticator:
    """A fake of the authentication port: ``Bearer resident-<id>`` is resident <id>."""

    async def authenticate(self, token: str) -> Principal:
        kind, _, subject = token.partition("-")
        if kind not in ("resident", "staff") or not subject:
            raise AuthenticationError("bad token", code="auth.token_invalid")
        return Principal(subject=subject, kind=PrincipalKind(kind), session_id="s-" + subject, audience="test")


class EchoIn(msgspec.Struct, rename="camel"):
    text: str
    amount_fen: int = 0


class EchoOut(msgspec.Struct, rename="camel"):
    text: str
    amount_fen: int
    run: int
    subject: str


@dataclass
class Probe:
    runs: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)


def probe_router(probe: Probe) -> Router:
    @post("/echo", status_code=201, sync_to_thread=False)
    def echo(data: JSONBody[EchoIn], request: Request[Any, Any, Any]) -> EchoOut:
        probe.runs += 1
        principal = current_principal(request)
        return EchoOut(text=data.text, amount_fen=data.amount_fen, run=probe.runs, subject=principal.subject)

    @post("/slow", status_code=201)
    async def slow(data: JSONBody[EchoIn]) -> EchoOut:
        probe.runs += 1
        probe.entered.set()
        await probe.gate.wait()
        return EchoOut(text=data.text, amount_fen=data.amount_fen, run=probe.runs, subject="")

    @post("/conflict", sync_to_thread=False)
    def conflict(data: JSONBody[EchoIn]) -> EchoOut:
        probe.runs += 1
        raise ConflictError("probe", code="probe.conflict", message="冲突")

    @post("/crash", sync_to_thread=False)
    def crash(data: JSONBody[EchoIn]) -> EchoOut:
        probe.runs += 1
        raise RuntimeError("boom")

    return Router(path="/api/v1/test", route_handlers=[echo, slow, conflict, crash])


def _ping(source: ConnectionSource) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        await source.ping()

    return check


def build_test_apps(
    source: ConnectionSource,
    *,
    clock: FixedClock | None = None,
    rate_limiter: RateLimiter | None = None,
    config: EdgeConfig | None = None,
    probe: Probe | None = None,
    extra: Sequence[Any] = (),
) -> tuple[Litestar, Litestar, BffDeps]:
    deps = BffDeps(
        config=config or EdgeConfig(env="test", docs=True, rate_limit_enabled=rate_limiter is not None),
        clock=clock or FixedClock(),
        uow_factory=unit_of_work_factory(source),
        idempotency=SqlIdempotencyStore(source),
        rate_limiter=rate_limiter,
        authenticator=TokenAuthenticator(),
        readiness={"database": _ping(source)},
        public_handlers=[probe_router(probe or Probe()), *extra],
    )
    public = create_app(deps)
    return public, create_admin_app(deps, public), deps


def state_of(app: Litestar) -> State:
    return app.state


def asgi_client(app: Litestar, *, client_ip: str = "203.0.113.7") -> httpx.AsyncClient:
    """An httpx client calling the app in this event loop (the adapters' connections belong to it)."""
    transport = httpx.ASGITransport(app=cast(Any, app), raise_app_exceptions=False, client=(client_ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")
