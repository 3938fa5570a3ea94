"""Rate limiting on the ``limits`` library (sliding-window counters in Redis, or in memory for the demo)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from domain.kernel.ephemeral import EphemeralStoreUnavailableError
from domain.kernel.ratelimit import RateDecision, RateLimit


class LimitsRateLimiter:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    @classmethod
    def redis(cls, url: str, *, prefix: str = "hsp:") -> LimitsRateLimiter:
        uri = "async+" + url if not url.startswith("async+") else url
        return cls(RedisStorage(uri, wrap_exceptions=True, implementation="redispy", key_prefix=prefix + "rl"))

    @classmethod
    def memory(cls) -> LimitsRateLimiter:
        return cls(MemoryStorage(wrap_exceptions=True))

    @staticmethod
    def _item(limit: RateLimit) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(limit.amount, limit.per_seconds, namespace=limit.name)

    async def hit(self, limit: RateLimit, key: str) -> RateDecision:
        item = self._item(limit)
        try:
            allowed = await self._limiter.hit(item, key)
            stats = await self._limiter.get_window_stats(item, key)
        except StorageError as exc:
            raise EphemeralStoreUnavailableError(f"rate-limit store unavailable: {type(exc).__name__}") from None
        retry_after = 0 if allowed else max(1, math.ceil(stats.reset_time - time.time()))
        return RateDecision(allowed=allowed, remaining=max(0, stats.remaining), retry_after_seconds=retry_after)

    async def reset(self, limit: RateLimit, key: str) -> None:
        try:
            await self._limiter.clear(self._item(limit), key)
        except StorageError as exc:
            raise EphemeralStoreUnavailableError(f"rate-limit store unavailable: {type(exc).__name__}") from None
