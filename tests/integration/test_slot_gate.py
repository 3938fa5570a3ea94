"""The slot gate in front of booking (issue: booking, item 3; DESIGN §3): one contract suite run against the
Redis gate and the demo's in-process gate, then what only Redis can show (a flush, an outage, bad keys) and the
rebuild from the real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from domain.booking.gate import GateVerdict, SlotGate, slot_key
from domain.kernel.ids import new_id
from load.gate_baseline import run_gate_baseline
from persistence.catalogue.tables import clinic_sessions, clinic_slots, hospitals
from persistence.db import ConnectionSource
from persistence.ephemeral.slot_gate import MemorySlotGate, RedisSlotGate, rebuild_gate

TTL = 600.0
LEASE = 10.0


class FakeTime:
    """Wall time in seconds that the test moves (the gate's ticket leases are read from it)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Gate:
    gate: SlotGate
    time: FakeTime
    flush: Callable[[], Awaitable[None]]
    """Lose every entry, as a flushed or restarted Redis (or a restarted demo process) does."""


async def _delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["redis", "memory"])
async def gate(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[Gate]:
    clock = FakeTime()
    if request.param == "memory":

        def _fresh() -> MemorySlotGate:
            return MemorySlotGate(ttl_seconds=TTL, ticket_seconds=LEASE, now=clock)

        async def _restart() -> None:
            holder.gate = _fresh()

        holder = Gate(_fresh(), clock, _restart)
        yield holder
        return
    prefix = f"{redis_prefix}gate:{new_id()}:"
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2.0)
    redis_gate = RedisSlotGate(client, prefix=prefix, ttl_seconds=TTL, ticket_seconds=LEASE, now=clock)
    yield Gate(redis_gate, clock, lambda: _delete_prefix(client, prefix))
    await _delete_prefix(client, prefix)
    await redis_gate.close()


# ------------------------------------------------------------------------------------------ the contract


async def test_an_unknown_slot_is_unknown_not_sold_out(gate: Gate) -> None:
    answer = await gate.gate.admit("H001:nowhere")
    assert answer.verdict is GateVerdict.UNKNOWN
    assert answer.ticket is None
    # reports about a slot the gate does not know change nothing and do not raise
    await gate.gate.taken("H001:nowhere", "t")
    await gate.gate.returned("H001:nowhere", "t")
    await gate.gate.released("H001:nowhere")
    assert (await gate.gate.admit("H001:nowhere")).verdict is GateVerdict.UNKNOWN


async def test_concurrent_admits_pass_exactly_the_remaining(gate: Gate) -> None:
    key = slot_key("H001", "S-1")
    await gate.gate.set_remaining({key: 7, slot_key("H001", "S-2"): 0})
    answers = await asyncio.gather(*(gate.gate.admit(key) for _ in range(60)))
    admitted = [a for a in answers if a.verdict is GateVerdict.ADMIT]
    assert len(admitted) == 7
    assert len({a.ticket for a in admitted}) == 7, "one ticket each"
    assert all(a.sold_out for a in answers if a.verdict is not GateVerdict.ADMIT)
    assert (await gate.gate.admit(slot_key("H001", "S-2"))).sold_out


async def test_a_returned_ticket_lets_one_more_in(gate: Gate) -> None:
    key = "H001:S-1"
    await gate.gate.set_remaining({key: 2})
    first, second = await gate.gate.admit(key), await gate.gate.admit(key)
    assert (await gate.gate.admit(key)).sold_out
    await gate.gate.returned(key, first.ticket)
    await gate.gate.returned(key, first.ticket)  # twice: still one ticket back
    again = await gate.gate.admit(key)
    assert again.verdict is GateVerdict.ADMIT
    assert (await gate.gate.admit(key)).sold_out
    assert second.ticket is not None


async def test_committed_takes_count_and_releases_give_back(gate: Gate) -> None:
    key = "H001:S-1"
    await gate.gate.set_remaining({key: 2})
    a, b = await gate.gate.admit(key), await gate.gate.admit(key)
    await gate.gate.taken(key, a.ticket)
    await gate.gate.taken(key, b.ticket)
    await gate.gate.taken(key, b.ticket)  # a repeated report counts once
    gate.time.t += LEASE * 10  # no ticket left to expire: the slot stays sold out
    assert (await gate.gate.admit(key)).sold_out
    await gate.gate.released(key)
    c = await gate.gate.admit(key)
    assert c.verdict is GateVerdict.ADMIT
    assert (await gate.gate.admit(key)).sold_out
    await gate.gate.taken(key, None)  # an UNKNOWN answer's report: nothing
    await gate.gate.returned(key, None)
    assert (await gate.gate.admit(key)).sold_out


async def test_a_lost_ticket_comes_back_when_its_lease_ends(gate: Gate) -> None:
    key = "H001:S-1"
    await gate.gate.set_remaining({key: 1})
    lost = await gate.gate.admit(key)  # the request dies before reporting
    assert (await gate.gate.admit(key)).sold_out
    gate.time.t += LEASE - 0.5
    assert (await gate.gate.admit(key)).sold_out, "still in flight"
    gate.time.t += 1
    late = await gate.gate.admit(key)
    assert late.verdict is GateVerdict.ADMIT, "self-healed"
    # the lost request's take arrives after all: not counted (it might be counted already), errs high
    await gate.gate.taken(key, lost.ticket)
    await gate.gate.taken(key, late.ticket)
    assert (await gate.gate.admit(key)).sold_out


async def test_a_rebuild_overwrites_counts_and_drops_tickets_in_flight(gate: Gate) -> None:
    key = "H001:S-1"
    await gate.gate.set_remaining({key: 1})
    before = await gate.gate.admit(key)
    await gate.gate.set_remaining({key: 3})  # PostgreSQL read after that request's take committed
    await gate.gate.taken(key, before.ticket)  # already counted by the rebuild: not again
    answers = [await gate.gate.admit(key) for _ in range(4)]
    assert [a.verdict for a in answers] == [GateVerdict.ADMIT] * 3 + [GateVerdict.SOLD_OUT]
    await gate.gate.set_remaining({key: -2})  # never below zero
    assert (await gate.gate.admit(key)).sold_out


async def test_forget_and_a_flush_make_the_gate_unknown_until_the_rebuild(gate: Gate) -> None:
    await gate.gate.set_remaining({"H001:S-1": 0, "H001:S-2": 0})
    await gate.gate.forget("H001:S-1")
    assert (await gate.gate.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
    await gate.flush()
    assert (await gate.gate.admit("H001:S-2")).verdict is GateVerdict.UNKNOWN, "a lost gate never says sold out"
    await gate.gate.set_remaining({"H001:S-2": 0})
    assert (await gate.gate.admit("H001:S-2")).sold_out


async def test_the_rebuild_writes_large_batches(gate: Gate) -> None:
    items = {slot_key("H001", f"S-{i}"): i % 3 for i in range(1_200)}
    await gate.gate.set_remaining(items)
    keys = list(items)
    answers = []
    for start in range(0, len(keys), 50):  # modest bursts: the gate's short timeout must not decide the test
        answers += await asyncio.gather(*(gate.gate.admit(k) for k in keys[start : start + 50]))
    assert sum(a.verdict is GateVerdict.ADMIT for a in answers) == sum(1 for v in items.values() if v > 0)
    assert not any(a.verdict is GateVerdict.UNKNOWN for a in answers)


# ------------------------------------------------------------------------------------------ entry lifetime


async def test_memory_entries_expire_after_their_ttl() -> None:
    clock = FakeTime()
    memory = MemorySlotGate(ttl_seconds=60, ticket_seconds=5, now=clock)
    await memory.set_remaining({"H001:S-1": 0})
    clock.t += 59
    assert (await memory.admit("H001:S-1")).sold_out
    clock.t += 2
    assert (await memory.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN, "stale entries fail open"


async def test_redis_entries_carry_the_ttl_and_adjustments_keep_it(redis_url: str, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}gate:{new_id()}:"
    gate = RedisSlotGate.from_url(redis_url, prefix=prefix, ttl_seconds=120, ticket_seconds=5)
    try:
        await gate.set_remaining({"H001:S-1": 2})
        ticket = (await gate.admit("H001:S-1")).ticket
        await gate.taken("H001:S-1", ticket)
        await gate.released("H001:S-1")
        remaining_key, tickets_key = gate.keys("H001:S-1")
        assert 110_000 < await gate.client.pttl(remaining_key) <= 120_000
        assert await gate.client.get(remaining_key) == b"2"
        await gate.admit("H001:S-1")
        assert 0 < await gate.client.pttl(tickets_key) <= 5_000
    finally:
        await _delete_prefix(gate.client, prefix)
        await gate.close()


# ------------------------------------------------------------------------------------------ Redis failures


async def test_an_unreachable_redis_answers_unknown_quickly_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    down = RedisSlotGate.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, pause_after_error_seconds=0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="persistence.ephemeral.slot_gate"):
        answers = [await down.admit("H001:S-1") for _ in range(5)]
        await down.taken("H001:S-1", "t")
        await down.returned("H001:S-1", "t")
        await down.released("H001:S-1")
        await down.set_remaining({"H001:S-1": 3})
        await down.forget("H001:S-1")
    elapsed = time.monotonic() - started
    await down.close()
    assert all(a.verdict is GateVerdict.UNKNOWN for a in answers)
    assert elapsed < 3, f"no retries, no backoff: {elapsed:.2f} s"
    assert any("redis unreachable" in r.getMessage() for r in caplog.records)


async def test_after_a_failure_the_gate_skips_redis_for_a_moment(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    down = RedisSlotGate(
        RedisSlotGate.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2).client,
        pause_after_error_seconds=5,
        monotonic=lambda: now[0],
    )
    with caplog.at_level(logging.WARNING, logger="persistence.ephemeral.slot_gate"):
        for _ in range(100):
            assert (await down.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
        now[0] += 6
        assert (await down.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
    await down.close()
    assert len([r for r in caplog.records if "redis unreachable" in r.getMessage()]) == 2, "one line per pause"


async def test_a_corrupt_entry_answers_unknown(redis_url: str, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}gate:{new_id()}:"
    gate = RedisSlotGate.from_url(redis_url, prefix=prefix)
    try:
        remaining_key, tickets_key = gate.keys("H001:S-1")
        await gate.client.hset(remaining_key, "f", "x")  # type: ignore[misc]  # WRONGTYPE for GET
        assert (await gate.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
        await gate.released("H001:S-1")
        await gate.client.delete(remaining_key)
        await gate.client.set(remaining_key, "not a number")
        assert (await gate.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
        await gate.set_remaining({"H001:S-1": 1})
        await gate.client.set(tickets_key, "x")  # WRONGTYPE on the tickets
        assert (await gate.admit("H001:S-1")).verdict is GateVerdict.UNKNOWN
        await gate.taken("H001:S-1", "t")
        await gate.returned("H001:S-1", "t")
    finally:
        await _delete_prefix(gate.client, prefix)
        await gate.close()


# ------------------------------------------------------------------------------------------ the rebuild


async def _seed_catalogue(source: ConnectionSource, today: date) -> None:
    now = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    async with source.engine.begin() as conn:
        for code in ("H001", "H002"):
            await conn.execute(
                hospitals.insert().values(
                    code=code,
                    name=f"医院{code}",
                    level="tertiary",
                    region_code="532301",
                    address="",
                    phone="",
                    adapter="fhir",
                    adapter_settings={},
                    pool_share_percent=100,
                    rules={},
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        sessions = [("H001", "SES-A", 0), ("H001", "SES-B", 7), ("H002", "SES-C", 1), ("H001", "SES-OLD", -1)]
        sessions.append(("H002", "SES-LATE", 8))
        for hospital, session_id, offset in sessions:
            await conn.execute(
                clinic_sessions.insert().values(
                    hospital_code=hospital,
                    id=session_id,
                    department_code="D1",
                    doctor_code=None,
                    day=today + timedelta(days=offset),
                    period="am",
                    status="open",
                    fee_fen=1000,
                    version="1",
                    synced_at=now,
                )
            )
        slots = [
            ("H001", "A-1", "SES-A", 5, 5),
            ("H001", "A-2", "SES-A", 5, 2),
            ("H001", "B-1", "SES-B", 3, 0),
            ("H002", "C-1", "SES-C", 2, 1),
            ("H002", "C-2", "SES-C", 1, 1),
            ("H001", "OLD-1", "SES-OLD", 4, 0),
            ("H002", "LATE-1", "SES-LATE", 4, 0),
        ]
        for hospital, slot_id, session_id, capacity, taken in slots:
            start = now + timedelta(hours=1)
            await conn.execute(
                clinic_slots.insert().values(
                    hospital_code=hospital,
                    id=slot_id,
                    session_id=session_id,
                    start_at=start,
                    end_at=start + timedelta(minutes=30),
                    capacity=capacity,
                    taken=taken,
                    his_booked=0,
                    synced_at=now,
                )
            )


async def _admitted(gate: SlotGate, key: str) -> int | None:
    """How many admits pass before SOLD_OUT (None: UNKNOWN)."""
    passed = 0
    while True:
        answer = await gate.admit(key)
        if answer.verdict is GateVerdict.UNKNOWN:
            return None
        if answer.sold_out:
            return passed
        passed += 1


@pytest.mark.pg
async def test_a_flushed_gate_is_rebuilt_from_postgresql(gate: Gate, committed_source: ConnectionSource) -> None:
    today = date(2026, 1, 5)
    await _seed_catalogue(committed_source, today)
    await gate.flush()
    assert (await gate.gate.admit("H001:A-1")).verdict is GateVerdict.UNKNOWN
    written = await rebuild_gate(
        gate.gate, committed_source, first_day=today, last_day=today + timedelta(days=7), chunk_size=2
    )
    assert written == 5, "paged by two: every slot of the sessions in range, once"
    counts = {k: await _admitted(gate.gate, k) for k in ("H001:A-1", "H001:A-2", "H001:B-1", "H002:C-1", "H002:C-2")}
    assert counts == {"H001:A-1": 0, "H001:A-2": 3, "H001:B-1": 3, "H002:C-1": 1, "H002:C-2": 0}
    assert await _admitted(gate.gate, "H001:OLD-1") is None, "outside the day range"
    assert await _admitted(gate.gate, "H002:LATE-1") is None, "outside the day range"

    # a release committed in PostgreSQL that the gate never heard of: the next rebuild sets it right
    async with committed_source.engine.begin() as conn:
        await conn.execute(
            clinic_slots.update().where(clinic_slots.c.id == "A-1").values(taken=clinic_slots.c.taken - 1)
        )
    assert (await gate.gate.admit("H001:A-1")).sold_out
    assert await rebuild_gate(gate.gate, committed_source, first_day=today, last_day=today) == 2
    assert await _admitted(gate.gate, "H001:A-1") == 1


@pytest.mark.pg
async def test_a_rebuild_of_an_empty_range_writes_nothing(gate: Gate, committed_source: ConnectionSource) -> None:
    day = date(2031, 1, 1)
    assert await rebuild_gate(gate.gate, committed_source, first_day=day, last_day=day) == 0


# ------------------------------------------------------------------------------------------ the baseline helper


async def test_the_benchmark_baseline_runs_the_admit_script(redis_url: str, redis_prefix: str) -> None:
    result = await run_gate_baseline(
        redis_url, ops=600, slots=10, remaining=4, concurrency=3, pipeline=16, prefix=f"{redis_prefix}bench:"
    )
    assert result.ops == 600
    assert (result.admitted, result.unknown) == (40, 0), "exactly the remaining pass, nothing unknown"
    assert result.ops_per_s > 0
    leftover = RedisSlotGate.from_url(redis_url)
    assert [k async for k in leftover.client.scan_iter(match=f"{redis_prefix}bench:*")] == []
    await leftover.close()
