"""A request that cannot get a database connection is turned away with 503 and Retry-After, never a 500: under
the morning release a process may have far more requests than connections (found by the storm benchmark)."""

from __future__ import annotations

import pytest

from domain.kernel.errors import DomainError
from persistence.db import ConnectionSource, DatabaseConfig, create_engine
from persistence.uow import SqlUnitOfWork
from tests.conftest import MigratedDatabase


async def test_no_connection_within_the_pool_timeout_is_a_503_with_retry_after(
    test_database: MigratedDatabase,
) -> None:
    engine = create_engine(
        DatabaseConfig(url=test_database.app_url, pool_size=1, max_overflow=0, pool_timeout_seconds=0.2)
    )
    source = ConnectionSource(engine)
    try:
        async with SqlUnitOfWork(source):  # holds the only connection
            with pytest.raises(DomainError) as busy:
                async with SqlUnitOfWork(source):
                    pass
            assert (busy.value.status, busy.value.code) == (503, "service.busy")
            assert getattr(busy.value, "retry_after", None) == 1
            with pytest.raises(DomainError) as also_busy:
                async with source.autocommit():
                    pass
            assert also_busy.value.code == "service.busy"
        async with SqlUnitOfWork(source):  # free again
            pass
    finally:
        await engine.dispose()
