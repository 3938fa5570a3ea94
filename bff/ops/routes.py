"""Health, readiness and metrics: served on the admin listener only (DESIGN D8)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bff.deps import BffDeps


class HealthOut(msgspec.Struct, rename="camel"):
    status: str
    version: str


class CheckOut(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    ok: bool
    detail: str | None = None


class ReadyOut(msgspec.Struct, rename="camel"):
    status: str
    checks: list[CheckOut]


@get("/healthz", operation_id="opsHealth", tags=["ops"], summary="Liveness: the process answers")
async def healthz(state: State) -> HealthOut:
    deps: BffDeps = state.deps
    return HealthOut(status="ok", version=deps.config.version)


@get(
    "/readyz",
    operation_id="opsReady",
    tags=["ops"],
    summary="Readiness: database, Redis and migrations at head",
    responses={},
)
async def readyz(state: State) -> Response[ReadyOut]:
    deps: BffDeps = state.deps

    async def run(name: str) -> CheckOut:
        try:
            await asyncio.wait_for(deps.readiness[name](), timeout=3.0)
        except Exception as exc:  # noqa: BLE001  (a readiness probe reports every failure)
            return CheckOut(name=name, ok=False, detail=f"{type(exc).__name__}: {str(exc)[:200]}")
        return CheckOut(name=name, ok=True)

    checks = list(await asyncio.gather(*(run(n) for n in sorted(deps.readiness))))
    ok = all(c.ok for c in checks)
    return Response(ReadyOut(status="ready" if ok else "not_ready", checks=checks), status_code=200 if ok else 503)


@get("/metrics", operation_id="opsMetrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    deps: BffDeps = state.deps
    if deps.metrics_refresh is not None:
        with contextlib.suppress(Exception):  # stale gauges beat a failed scrape
            await deps.metrics_refresh()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


OPS_HANDLERS: list[Any] = [healthz, readyz, metrics]
