"""Engines and connections. PostgreSQL through asyncpg in production and tests; SQLite through aiosqlite
for the embedded demo (DESIGN D11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from domain.kernel.errors import UnavailableError


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_seconds: float = 10.0
    statement_timeout_ms: int = 15_000
    echo: bool = False


def create_engine(config: DatabaseConfig) -> AsyncEngine:
    url = sa.make_url(config.url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=config.echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        echo=config.echo,
        pool_size=config.pool_size,
        max_overflow=config.max_overflow,
        pool_timeout=config.pool_timeout_seconds,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "statement_timeout": str(config.statement_timeout_ms),
                "application_name": "hsp-bff",
            }
        },
    )


class DatabaseBusyError(UnavailableError):
    code = "service.busy"
    message = "当前访问人数较多，请稍后重试"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, retry_after=1)


class ConnectionSource:
    """Hands out connections for units of work: a fresh pooled one per unit, or, in tests, one outer
    connection whose units become savepoints rolled back with the test."""

    def __init__(self, engine: AsyncEngine, *, fixed: AsyncConnection | None = None) -> None:
        self.engine = engine
        self.fixed = fixed

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> bool:
        if self.fixed is not None:
            await self.fixed.execute(sa.text("SELECT 1"))
            return True
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True

    async def checkout(self) -> AsyncConnection:
        """A pooled connection; ``DatabaseBusyError`` (503 with Retry-After) when none frees up within the pool
        timeout: a request that cannot get a connection is turned away, not failed with a 500."""
        try:
            return await self.engine.connect()
        except sa.exc.TimeoutError as exc:
            raise DatabaseBusyError("no database connection within the pool timeout") from exc

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one short statement group committed at the end (idempotency records, clock)."""
        if self.fixed is not None:
            async with self.fixed.begin_nested():
                yield self.fixed
            return
        conn = await self.checkout()
        try:
            async with conn.begin():
                yield conn
        finally:
            await conn.close()
