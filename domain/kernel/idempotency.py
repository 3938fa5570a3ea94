"""Idempotency records for write routes (DESIGN D8), kept in PostgreSQL and scoped to the principal.

A record is keyed by (principal, method, route, key). The first request creates it IN_PROGRESS; a
concurrent retry gets 409 with Retry-After; a later retry with the same body gets the stored response; the
same key with another body is refused. A response of 5xx abandons the record so the client may retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from domain.kernel.errors import ConflictError, ValidationError


class IdempotencyState(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    principal: str
    method: str
    route: str
    key: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class BeginResult:
    started: bool
    """True when this request owns the record and must run."""
    replay: StoredResponse | None = None


class IdempotencyInProgressError(ConflictError):
    code = "idempotency.in_progress"
    message = "请求正在处理中，请稍后再试"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("a request with this Idempotency-Key is still in progress")
        self.retry_after = retry_after


class IdempotencyKeyMismatchError(ValidationError):
    code = "idempotency.key_reused"
    message = "请求标识已被另一请求使用"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


class InvalidIdempotencyKeyError(ValidationError):
    code = "idempotency.key_invalid"
    message = "请求标识格式不正确"


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= 128 or not all(33 <= ord(ch) < 127 for ch in key):
        raise InvalidIdempotencyKeyError("Idempotency-Key must be 1..128 printable ASCII characters")
    return key


class IdempotencyStore(Protocol):
    async def begin(
        self,
        scope: IdempotencyScope,
        *,
        fingerprint: str,
        now: datetime,
        lease_seconds: int,
        retain_seconds: int,
    ) -> BeginResult:
        """Claim the record, or report how it stands. An IN_PROGRESS record whose lease ran out (its owner
        died) is taken over. Raises IdempotencyInProgressError or IdempotencyKeyMismatchError."""
        ...

    async def complete(self, scope: IdempotencyScope, response: StoredResponse, *, now: datetime) -> None: ...

    async def abandon(self, scope: IdempotencyScope) -> None: ...

    async def purge_expired(self, *, now: datetime) -> int: ...
