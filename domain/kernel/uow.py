"""The unit of work: one explicit transaction per step (DESIGN D2).

A use case opens ``async with uow_factory() as uow:``, works through the repositories the unit exposes,
and calls ``await uow.commit()`` last. Leaving the block without a commit rolls back. Feature packages
extend this protocol with their own repositories; the persistence adapter implements all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from domain.kernel.audit import AuditRepository
from domain.kernel.outbox import OutboxRepository


class UnitOfWork(Protocol):
    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]
