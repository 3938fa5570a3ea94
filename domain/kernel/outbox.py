"""The transactional outbox: side effects leave the database only through rows written in the same
transaction as the change that causes them, and a relay hands them to the task runner (DESIGN D2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: str
    topic: str
    payload: Mapping[str, Any]
    created_at: datetime
    key: str | None = None
    attempts: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)


class OutboxRepository(Protocol):
    async def add(
        self,
        topic: str,
        payload: Mapping[str, Any],
        *,
        now: datetime,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Write one message in the current transaction; returns its id."""
        ...

    async def claim(self, limit: int, *, now: datetime) -> Sequence[OutboxMessage]:
        """Lock up to ``limit`` unrelayed messages in id order, skipping rows another relay holds."""
        ...

    async def mark_relayed(self, ids: Sequence[str], *, now: datetime) -> None: ...

    async def mark_failed(self, message_id: str, *, now: datetime, retry_at: datetime, error: str) -> None: ...

    async def oldest_pending_at(self) -> datetime | None:
        """When the oldest unrelayed message was written (for the outbox-lag metric)."""
        ...


class OutboxDispatcher(Protocol):
    """Hands one message to whatever acts on it (the task runner). Must be safe to call twice for the same
    message: consumers deduplicate on the message id."""

    async def dispatch(self, message: OutboxMessage) -> None: ...
