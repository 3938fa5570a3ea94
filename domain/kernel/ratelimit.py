"""Rate limits (DESIGN D8): per account first, per real client IP second.

A limit that protects a security check (login attempts, SMS codes) fails closed when its store is down;
any other limit lets the request through (D1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    amount: int
    per_seconds: int
    fail_closed: bool = False


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_seconds: int


class RateLimiter(Protocol):
    async def hit(self, limit: RateLimit, key: str) -> RateDecision:
        """Count one request against ``limit`` for ``key``. Raises EphemeralStoreUnavailableError when the
        store is down; the caller applies ``fail_closed``."""
        ...

    async def reset(self, limit: RateLimit, key: str) -> None: ...
