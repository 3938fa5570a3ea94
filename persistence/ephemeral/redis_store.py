"""The Redis adapter of the ephemeral store (DESIGN D1): fast, never the truth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.kernel.ephemeral import EphemeralStoreUnavailableError

# Take only when enough is available. KEYS[1] gate; ARGV[1] amount. -1: unknown gate (caller asks the truth).
_GATE_TAKE = """
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
v = tonumber(v)
local n = tonumber(ARGV[1])
if v < n then return -2 end
return redis.call('DECRBY', KEYS[1], n)
"""
_GATE_GIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
"""
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisEphemeralStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "hsp:") -> None:
        self._r = client
        self._prefix = prefix
        self._take = client.register_script(_GATE_TAKE)
        self._give = client.register_script(_GATE_GIVE)
        self._release = client.register_script(_RELEASE_LOCK)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "hsp:", socket_timeout: float = 2.0) -> RedisEphemeralStore:
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, health_check_interval=30
        )
        return cls(client, prefix=prefix)

    @property
    def client(self) -> aioredis.Redis:
        return self._r

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise EphemeralStoreUnavailableError(f"redis unavailable: {type(exc).__name__}") from None
        except RedisError as exc:
            raise EphemeralStoreUnavailableError(f"redis error: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self._r.aclose()

    async def ping(self) -> bool:
        return bool(await self._call(self._r.ping()))

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._call(self._r.get(self._k(key))))

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        px = int(ttl_seconds * 1000) if ttl_seconds else None
        await self._call(self._r.set(self._k(key), value, px=px))

    async def set_if_absent(self, key: str, value: bytes, *, ttl_seconds: float) -> bool:
        return bool(await self._call(self._r.set(self._k(key), value, px=int(ttl_seconds * 1000), nx=True)))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self._call(self._r.delete(*(self._k(k) for k in keys))))

    async def incr(self, key: str, *, amount: int = 1, ttl_seconds: float | None = None) -> int:
        async def _run() -> int:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.incrby(self._k(key), amount)
                if ttl_seconds:
                    pipe.pexpire(self._k(key), int(ttl_seconds * 1000), nx=True)
                result = await pipe.execute()
            return int(result[0])

        return cast(int, await self._call(_run()))

    async def acquire_lock(self, name: str, *, token: str, ttl_seconds: float) -> bool:
        return await self.set_if_absent("lock:" + name, token.encode(), ttl_seconds=ttl_seconds)

    async def release_lock(self, name: str, *, token: str) -> bool:
        return bool(await self._call(self._release(keys=[self._k("lock:" + name)], args=[token])))

    async def gate_reset(self, key: str, *, available: int, ttl_seconds: float | None = None) -> None:
        await self.set("gate:" + key, str(int(available)).encode(), ttl_seconds=ttl_seconds)

    async def gate_take(self, key: str, *, amount: int = 1) -> int | None:
        value = int(await self._call(self._take(keys=[self._k("gate:" + key)], args=[amount])))
        return None if value == -2 else value

    async def gate_give(self, key: str, *, amount: int = 1) -> int | None:
        value = int(await self._call(self._give(keys=[self._k("gate:" + key)], args=[amount])))
        return None if value == -1 else value

    async def publish(self, channel: str, message: bytes) -> int:
        return int(await self._call(self._r.publish(self._k(channel), message)))

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        await self._call(pubsub.subscribe(self._k(channel)))
        try:
            while True:
                message = await self._call(pubsub.get_message(timeout=1.0))
                if message is not None and message.get("type") == "message":
                    yield bytes(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
