"""Serving the public and the admin listener from one process with uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import uvicorn
from litestar import Litestar


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _config(app: Litestar, bind: str, *, lifespan: Literal["on", "off"]) -> uvicorn.Config:
    host, port = split_bind(bind)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the app reads X-Forwarded-For itself, from trusted proxies only
        server_header=False,
        timeout_graceful_shutdown=10,
    )


async def serve(
    public: Litestar,
    admin: Litestar,
    *,
    bind: str,
    admin_bind: str,
    on_started: Callable[[], None] | None = None,
) -> None:
    public_server = uvicorn.Server(_config(public, bind, lifespan="on"))
    admin_server = uvicorn.Server(_config(admin, admin_bind, lifespan="off"))

    async def announce() -> None:
        while not (public_server.started and admin_server.started):
            if public_server.should_exit or admin_server.should_exit:
                return
            await asyncio.sleep(0.05)
        if on_started is not None:
            on_started()

    async def admin_follows_public() -> None:
        await public_server.serve()
        admin_server.should_exit = True

    await asyncio.gather(admin_follows_public(), admin_server.serve(), announce())
