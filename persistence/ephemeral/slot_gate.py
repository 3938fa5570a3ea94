"""The slot gate (``domain.booking.gate``, DESIGN §3): Redis with Lua scripts, an in-process twin for the demo,
and the rebuild from PostgreSQL.

Redis layout per slot (``{...}`` is a cluster hash tag, so both keys of a slot live on one node):

* ``<prefix>slotgate:{<slot key>}:r``: remaining, a string integer with the entry's TTL;
* ``<prefix>slotgate:{<slot key>}:t``: the tickets in flight, a sorted set scored by lease end (epoch ms).

Every Redis error becomes ``UNKNOWN`` (or a dropped report) and a log line, never an exception: PostgreSQL is the
truth and decides anyway. After a connection failure the gate skips Redis for ``pause_after_error_seconds`` so
that a storm against a dead Redis costs neither a timeout per request nor a log line per request.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from typing import Any, TypeVar

import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.booking.gate import SOLD_OUT, UNKNOWN, GateAnswer, GateVerdict, SlotGate, slot_key
from persistence.catalogue.tables import clinic_sessions, clinic_slots
from persistence.db import ConnectionSource

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TTL_SECONDS = 900.0
"""How long an entry outlives its last rebuild (rebuild every minute or so: a missed rebuild or two is fine)."""
DEFAULT_TICKET_SECONDS = 30.0
"""Lease of a ticket: longer than a hold transaction normally takes, short enough that a crashed request's
ticket comes back soon."""

# KEYS[1] remaining, KEYS[2] tickets; ARGV[1] now (epoch ms), ARGV[2] lease (ms), ARGV[3] new ticket id.
# Returns -1 unknown (no entry), 0 sold out, 1 admitted (the ticket is in flight).
ADMIT_SCRIPT = """
local r = redis.call('GET', KEYS[1])
if not r then return -1 end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if tonumber(r) - redis.call('ZCARD', KEYS[2]) <= 0 then return 0 end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[2], lease)
return 1
"""

# KEYS[1] remaining, KEYS[2] tickets; ARGV[1] the ticket. Counts the take only while the ticket is in flight.
# Returns the new remaining, or -1 when nothing was counted.
TAKEN_SCRIPT = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return -1 end
local r = redis.call('GET', KEYS[1])
if not r then return -1 end
if tonumber(r) <= 0 then return 0 end
return redis.call('DECR', KEYS[1])
"""

# KEYS[1] remaining. Returns the new remaining, or -1 when there is no entry (nothing to adjust).
RELEASED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('INCR', KEYS[1])
"""


def _chunks(items: Mapping[str, int], size: int) -> Iterator[list[tuple[str, int]]]:
    it = iter(items.items())
    while chunk := list(islice(it, size)):
        yield chunk


class RedisSlotGate:
    """The slot gate on Redis. Give it its own client (``from_url``): short timeouts and no retries, so that a
    slow or dead Redis sends requests to PostgreSQL at once instead of after redis-py's retry backoff."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "hsp:",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        ticket_seconds: float = DEFAULT_TICKET_SECONDS,
        pause_after_error_seconds: float = 1.0,
        rebuild_chunk: int = 500,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or ticket_seconds <= 0:
            raise ValueError("ttl_seconds and ticket_seconds must be positive")
        self._r = client
        self._prefix = prefix + "slotgate:"
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._lease_ms = max(1, int(ticket_seconds * 1000))
        self._pause = pause_after_error_seconds
        self._chunk = max(1, rebuild_chunk)
        self._now = now
        self._monotonic = monotonic
        self._paused_until = 0.0
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._taken = client.register_script(TAKEN_SCRIPT)
        self._released = client.register_script(RELEASED_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "hsp:",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        ticket_seconds: float = DEFAULT_TICKET_SECONDS,
        socket_timeout: float = 0.5,
        pause_after_error_seconds: float = 1.0,
    ) -> RedisSlotGate:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        return cls(
            client,
            prefix=prefix,
            ttl_seconds=ttl_seconds,
            ticket_seconds=ticket_seconds,
            pause_after_error_seconds=pause_after_error_seconds,
        )

    @property
    def client(self) -> aioredis.Redis:
        return self._r

    @property
    def admit_script(self) -> AsyncScript:
        """The registered admit script (for the benchmark baseline, which pipelines it)."""
        return self._admit

    async def close(self) -> None:
        await self._r.aclose()

    def keys(self, slot_key: str) -> tuple[str, str]:
        """(remaining, tickets) keys of one slot."""
        base = f"{self._prefix}{{{slot_key}}}"
        return base + ":r", base + ":t"

    def admit_args(self, ticket: str) -> list[int | str]:
        return [int(self._now() * 1000), self._lease_ms, ticket]

    async def _call(self, operation: str, slot: str, awaitable: Callable[[], Awaitable[T]]) -> T | None:
        """Run one Redis call; None when Redis is paused or failed (logged once per failure)."""
        if self._monotonic() < self._paused_until:
            return None
        try:
            return await awaitable()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._paused_until = self._monotonic() + self._pause
            logger.warning(
                "slot gate: redis unreachable during %s of %s (%s); going to PostgreSQL for %.1f s",
                operation,
                slot,
                type(exc).__name__,
                self._pause,
            )
        except RedisError as exc:
            logger.warning("slot gate: redis %s of %s failed: %s", operation, slot, exc)
        return None

    async def admit(self, slot_key: str) -> GateAnswer:
        ticket = secrets.token_hex(8)
        result = await self._call(
            "admit", slot_key, lambda: self._admit(keys=self.keys(slot_key), args=self.admit_args(ticket))
        )
        if result is None or int(result) < 0:
            return UNKNOWN
        if int(result) == 0:
            return SOLD_OUT
        return GateAnswer(GateVerdict.ADMIT, ticket)

    async def taken(self, slot_key: str, ticket: str | None) -> None:
        if ticket is not None:
            await self._call("taken", slot_key, lambda: self._taken(keys=self.keys(slot_key), args=[ticket]))

    async def returned(self, slot_key: str, ticket: str | None) -> None:
        if ticket is not None:
            await self._call("returned", slot_key, lambda: self._r.zrem(self.keys(slot_key)[1], ticket))

    async def released(self, slot_key: str) -> None:
        await self._call("released", slot_key, lambda: self._released(keys=self.keys(slot_key)[:1]))

    async def set_remaining(self, items: Mapping[str, int]) -> None:
        for chunk in _chunks(items, self._chunk):

            async def _write(chunk: list[tuple[str, int]] = chunk) -> list[Any]:
                async with self._r.pipeline(transaction=True) as pipe:
                    for key, remaining in chunk:
                        remaining_key, tickets_key = self.keys(key)
                        pipe.set(remaining_key, max(0, int(remaining)), px=self._ttl_ms)
                        pipe.delete(tickets_key)
                    return list(await pipe.execute())

            if await self._call("set_remaining", f"{len(chunk)} slots", _write) is None:
                return  # Redis is away: the next rebuild writes everything again

    async def forget(self, slot_key: str) -> None:
        await self._call("forget", slot_key, lambda: self._r.delete(*self.keys(slot_key)))


@dataclass
class _Entry:
    remaining: int
    expires: float
    tickets: dict[str, float] = field(default_factory=dict)
    """ticket -> lease end."""


class MemorySlotGate:
    """The slot gate in process, for the single-process demo: the same semantics as :class:`RedisSlotGate`."""

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        ticket_seconds: float = DEFAULT_TICKET_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0 or ticket_seconds <= 0:
            raise ValueError("ttl_seconds and ticket_seconds must be positive")
        self._ttl = ttl_seconds
        self._lease = ticket_seconds
        self._now = now
        self._entries: dict[str, _Entry] = {}

    def _entry(self, slot_key: str) -> _Entry | None:
        entry = self._entries.get(slot_key)
        if entry is not None and entry.expires <= self._now():
            del self._entries[slot_key]
            return None
        return entry

    async def admit(self, slot_key: str) -> GateAnswer:
        entry = self._entry(slot_key)
        if entry is None:
            return UNKNOWN
        now = self._now()
        entry.tickets = {t: end for t, end in entry.tickets.items() if end > now}
        if entry.remaining - len(entry.tickets) <= 0:
            return SOLD_OUT
        ticket = secrets.token_hex(8)
        entry.tickets[ticket] = now + self._lease
        return GateAnswer(GateVerdict.ADMIT, ticket)

    async def taken(self, slot_key: str, ticket: str | None) -> None:
        entry = self._entry(slot_key)
        if ticket is None or entry is None:
            return
        if entry.tickets.pop(ticket, None) is not None:
            entry.remaining = max(0, entry.remaining - 1)

    async def returned(self, slot_key: str, ticket: str | None) -> None:
        entry = self._entry(slot_key)
        if ticket is not None and entry is not None:
            entry.tickets.pop(ticket, None)

    async def released(self, slot_key: str) -> None:
        entry = self._entry(slot_key)
        if entry is not None:
            entry.remaining += 1

    async def set_remaining(self, items: Mapping[str, int]) -> None:
        expires = self._now() + self._ttl
        for key, remaining in items.items():
            self._entries[key] = _Entry(remaining=max(0, int(remaining)), expires=expires)

    async def forget(self, slot_key: str) -> None:
        self._entries.pop(slot_key, None)


# --------------------------------------------------------------------------------------------- the rebuild


async def slot_remaining_page(
    conn: AsyncConnection, *, first_day: date, last_day: date, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str, int]]:
    """(hospital code, slot id, capacity - taken) of the slots of sessions on ``first_day .. last_day``, in key
    order after ``after`` (keyset paging), at most ``limit``."""
    query = (
        sa.select(clinic_slots.c.hospital_code, clinic_slots.c.id, clinic_slots.c.capacity - clinic_slots.c.taken)
        .select_from(
            clinic_slots.join(
                clinic_sessions,
                sa.and_(
                    clinic_sessions.c.hospital_code == clinic_slots.c.hospital_code,
                    clinic_sessions.c.id == clinic_slots.c.session_id,
                ),
            )
        )
        .where(clinic_sessions.c.day >= first_day, clinic_sessions.c.day <= last_day)
        .order_by(clinic_slots.c.hospital_code, clinic_slots.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(
            sa.or_(
                clinic_slots.c.hospital_code > after[0],
                sa.and_(clinic_slots.c.hospital_code == after[0], clinic_slots.c.id > after[1]),
            )
        )
    return [(r[0], r[1], max(0, int(r[2]))) for r in (await conn.execute(query)).all()]


async def rebuild_gate(
    gate: SlotGate, source: ConnectionSource, *, first_day: date, last_day: date, chunk_size: int = 1000
) -> int:
    """Overwrite the gate from PostgreSQL for the slots of sessions on ``first_day .. last_day`` (inclusive; the
    caller picks them, typically today in Shanghai .. the widest booking window). Each chunk is read in its own
    short transaction and written after it ends, so the read precedes the write of every slot (what
    ``set_remaining`` relies on). Returns the number of slots written. Never raises for Redis (the gate
    swallows); a database error propagates."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    written = 0
    after: tuple[str, str] | None = None
    while True:
        async with source.autocommit() as conn:
            page = await slot_remaining_page(
                conn, first_day=first_day, last_day=last_day, after=after, limit=chunk_size
            )
        if not page:
            return written
        await gate.set_remaining({slot_key(hospital, slot): remaining for hospital, slot, remaining in page})
        written += len(page)
        if len(page) < chunk_size:
            return written
        after = (page[-1][0], page[-1][1])
