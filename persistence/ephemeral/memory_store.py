"""The in-process ephemeral store for the single-process demo (DESIGN D11). Same semantics as Redis."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable


class InMemoryEphemeralStore:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._now = monotonic
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._now():
            del self._data[key]
            return None
        return value

    def _expiry(self, ttl_seconds: float | None) -> float | None:
        return self._now() + ttl_seconds if ttl_seconds else None

    async def ping(self) -> bool:
        return True

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        self._data[key] = (value, self._expiry(ttl_seconds))

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        if self._live(key) is not None:
            return False
        self._data[key] = (value, self._expiry(ttl_seconds))
        return True

    async def delete(self, *keys: str) -> int:
        removed = 0
        for key in keys:
            if self._live(key) is not None:
                removed += 1
            self._data.pop(key, None)
        return removed

    async def incr(self, key: str, *, amount: int = 1, ttl_seconds: float | None = None) -> int:
        current = self._live(key)
        if current is None:
            value, expires = amount, self._expiry(ttl_seconds)
        else:
            value, expires = int(current) + amount, self._data[key][1]
        self._data[key] = (str(value).encode(), expires)
        return value

    async def acquire_lock(self, name: str, *, token: str, ttl_seconds: float) -> bool:
        return await self.set_if_absent("lock:" + name, token.encode(), ttl_seconds=ttl_seconds)

    async def release_lock(self, name: str, *, token: str) -> bool:
        if self._live("lock:" + name) == token.encode():
            del self._data["lock:" + name]
            return True
        return False

    async def gate_reset(self, key: str, *, available: int, ttl_seconds: float | None = None) -> None:
        await self.set("gate:" + key, str(int(available)).encode(), ttl_seconds=ttl_seconds)

    async def gate_take(self, key: str, *, amount: int = 1) -> int | None:
        current = self._live("gate:" + key)
        if current is None:
            return -1
        value = int(current)
        if value < amount:
            return None
        self._data["gate:" + key] = (str(value - amount).encode(), self._data["gate:" + key][1])
        return value - amount

    async def gate_give(self, key: str, *, amount: int = 1) -> int | None:
        current = self._live("gate:" + key)
        if current is None:
            return None
        value = int(current) + amount
        self._data["gate:" + key] = (str(value).encode(), self._data["gate:" + key][1])
        return value

    async def publish(self, channel: str, message: bytes) -> int:
        queues = self._subscribers.get(channel, set())
        for queue in queues:
            queue.put_nowait(message)
        return len(queues)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers[channel].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)
