"""Test infrastructure (DESIGN §6).

* One PostgreSQL database per xdist worker, built by the Alembic migrations as the owner, used by the
  application's own limited role (``hsp_app``), so that the migrations and the grants are tested.
* ``uow_source``: plain tests run inside one outer transaction rolled back at the end.
* ``committed_source``: tests that need data committed across connections; tables are emptied after.
* One Redis key prefix per worker, deleted after the session.

``TEST_PG_ADMIN_URL`` (a superuser or CREATEDB/CREATEROLE login) and ``TEST_REDIS_URL`` override the defaults.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bootstrap.migrate import upgrade
from persistence.db import ConnectionSource, DatabaseConfig, create_engine

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
APP_ROLE = "hsp_app"


@dataclass(frozen=True)
class MigratedDatabase:
    name: str
    owner_url: str
    app_url: str


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _with_db(url: str, database: str, *, user: str | None = None) -> str:
    parsed = sa.make_url(url).set(database=database)
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.render_as_string(hide_password=False)


async def _admin_execute(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def _ensure_role() -> None:
    await _admin_execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') "
        f"THEN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END $$"
    )


def create_test_database(name: str) -> MigratedDatabase:
    """Create (anew) a database migrated to head; the app role may connect to it."""
    asyncio.run(_ensure_role())
    asyncio.run(
        _admin_execute(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}"',
            f'GRANT CONNECT, TEMP ON DATABASE "{name}" TO {APP_ROLE}',
        )
    )
    owner_url = _with_db(PG_ADMIN_URL, name)
    upgrade(owner_url, app_role=APP_ROLE)
    asyncio.run(_grant_schema(owner_url))
    return MigratedDatabase(name=name, owner_url=owner_url, app_url=_with_db(PG_ADMIN_URL, name, user=APP_ROLE))


async def _grant_schema(owner_url: str) -> None:
    engine = create_async_engine(owner_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}"))
    finally:
        await engine.dispose()


def drop_test_database(name: str) -> None:
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def test_database() -> Iterator[MigratedDatabase]:
    # The pid too: two test runs on one machine (a developer's and CI's) must not drop each other's database.
    db = create_test_database(f"hsp_test_{_worker()}_{os.getpid()}")
    yield db
    drop_test_database(db.name)


@pytest.fixture(scope="session")
async def app_engine(test_database: MigratedDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseConfig(url=test_database.app_url, pool_size=5, max_overflow=20))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def owner_engine(test_database: MigratedDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseConfig(url=test_database.owner_url, pool_size=2, max_overflow=5))
    yield engine
    await engine.dispose()


@pytest.fixture
async def uow_source(app_engine: AsyncEngine) -> AsyncIterator[ConnectionSource]:
    """Units of work become savepoints of one outer transaction that is rolled back after the test."""
    async with app_engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield ConnectionSource(app_engine, fixed=conn)
        finally:
            await outer.rollback()


KERNEL_TABLES = ("outbox", "idempotency_records")


@pytest.fixture
async def committed_source(app_engine: AsyncEngine, owner_engine: AsyncEngine) -> AsyncIterator[ConnectionSource]:
    """Real commits across connections; the tables this suite writes are emptied afterwards."""
    yield ConnectionSource(app_engine)
    async with owner_engine.begin() as conn:
        existing = set(
            (await conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars()
        )
        mutable = [t for t in existing if t not in {"alembic_version", "clock_offset"} and not t.startswith("audit")]
        if mutable:
            await conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in sorted(mutable)) + " CASCADE"))
        await conn.execute(sa.text("UPDATE clock_offset SET offset_seconds = 0"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"hsp-test:{_worker()}:{os.getpid()}:"
