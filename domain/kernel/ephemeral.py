"""What we use Redis for (DESIGN D1): caches with TTL, locks with TTL, counters, Lua-scripted gates and
pub/sub. Redis is for speed, never the truth: everything kept here can be rebuilt from PostgreSQL.

Adapters raise :class:`EphemeralStoreUnavailableError` when the store cannot be reached, so that callers
choose: security checks fail closed, everything else falls back to the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from domain.kernel.errors import UnavailableError


class EphemeralStoreUnavailableError(UnavailableError):
    code = "service.cache_unavailable"


class EphemeralStore(Protocol):
    async def ping(self) -> bool: ...

    # cache
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None: ...

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool: ...

    async def delete(self, *keys: str) -> int: ...

    # counters
    async def incr(self, key: str, *, amount: int = 1, ttl_seconds: float | None = None) -> int:
        """Add to a counter; the TTL is set when the counter is created."""
        ...

    # locks
    async def acquire_lock(self, name: str, *, token: str, ttl_seconds: float) -> bool: ...

    async def release_lock(self, name: str, *, token: str) -> bool:
        """Release only when ``token`` still holds the lock (a lock that expired and was re-taken stays)."""
        ...

    # gates: atomic counters that never go below zero (one Lua script in Redis)
    async def gate_reset(self, key: str, *, available: int, ttl_seconds: float | None = None) -> None: ...

    async def gate_take(self, key: str, *, amount: int = 1) -> int | None:
        """Take ``amount`` when that many are available; returns what remains, or None when refused.
        An unknown gate (never reset or expired) answers -1 without taking: the caller goes to the truth."""
        ...

    async def gate_give(self, key: str, *, amount: int = 1) -> int | None:
        """Give back; returns the new value, or None when the gate is unknown."""
        ...

    # pub/sub
    async def publish(self, channel: str, message: bytes) -> int: ...

    def subscribe(self, channel: str) -> AsyncIterator[bytes]: ...
