"""The ephemeral store port: the Redis adapter and the demo's in-process adapter behave the same, and the
Redis adapter reports an outage as EphemeralStoreUnavailableError (DESIGN D1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from domain.kernel.ephemeral import EphemeralStore, EphemeralStoreUnavailableError
from domain.kernel.ids import new_id
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from persistence.ephemeral.redis_store import RedisEphemeralStore


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[EphemeralStore]:
    if request.param == "memory":
        yield InMemoryEphemeralStore()
        return
    prefix = f"{redis_prefix}eph:{new_id()}:"
    redis_store = RedisEphemeralStore.from_url(redis_url, prefix=prefix)
    yield redis_store
    keys = [k async for k in redis_store.client.scan_iter(match=prefix + "*")]
    if keys:
        await redis_store.client.delete(*keys)
    await redis_store.close()


async def test_cache_set_get_delete(store: EphemeralStore) -> None:
    assert await store.get("a") is None
    await store.set("a", b"1")
    assert await store.get("a") == b"1"
    assert await store.set_if_absent("a", b"2", ttl_seconds=10) is False
    assert await store.delete("a", "missing") == 1
    assert await store.get("a") is None


async def test_counters(store: EphemeralStore) -> None:
    assert await store.incr("c", ttl_seconds=60) == 1
    assert await store.incr("c", amount=4, ttl_seconds=60) == 5


async def test_locks_are_released_only_by_their_holder(store: EphemeralStore) -> None:
    assert await store.acquire_lock("job", token="t1", ttl_seconds=30)
    assert not await store.acquire_lock("job", token="t2", ttl_seconds=30)
    assert not await store.release_lock("job", token="t2")
    assert await store.release_lock("job", token="t1")
    assert await store.acquire_lock("job", token="t2", ttl_seconds=30)


async def test_gates_never_go_below_zero_under_concurrency(store: EphemeralStore) -> None:
    assert await store.gate_take("unknown") == -1, "an unknown gate sends the caller to the truth"
    await store.gate_reset("slot", available=10)
    results = await asyncio.gather(*(store.gate_take("slot") for _ in range(50)))
    granted = [r for r in results if r is not None]
    assert len(granted) == 10
    assert sorted(granted) == list(range(10))
    assert await store.gate_take("slot") is None
    assert await store.gate_give("slot") == 1
    assert await store.gate_give("never-set") is None


async def test_pubsub_delivers_to_subscribers(store: EphemeralStore) -> None:
    received: list[bytes] = []
    ready = asyncio.Event()

    async def listen() -> None:
        iterator = store.subscribe("chan")
        ready.set()
        async for message in iterator:
            received.append(message)
            return

    listener = asyncio.create_task(listen())
    await ready.wait()
    for _ in range(50):
        await asyncio.sleep(0.02)
        if await store.publish("chan", b"hello") >= 1:
            break
    await asyncio.wait_for(listener, timeout=5)
    assert received == [b"hello"]


async def test_memory_ttls_expire_on_its_clock() -> None:
    clock = FakeMonotonic()
    memory = InMemoryEphemeralStore(monotonic=clock)
    await memory.set("k", b"v", ttl_seconds=5)
    clock.t += 4.9
    assert await memory.get("k") == b"v"
    clock.t += 0.2
    assert await memory.get("k") is None


async def test_an_unreachable_redis_is_reported_as_unavailable() -> None:
    down = RedisEphemeralStore.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5)
    with pytest.raises(EphemeralStoreUnavailableError) as caught:
        await down.get("anything")
    assert caught.value.status == 503
    assert caught.value.code == "service.cache_unavailable"
    await down.close()
