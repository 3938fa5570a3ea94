"""The HIS gateway: hospital code -> its adapter, each wrapped in that hospital's own circuit breaker, concurrency
limit (bulkhead) and per-call timeout, so that one failing or slow HIS neither slows nor breaks the others.

Reads (directory, sessions, queue position, patient search, bills) are retried with backoff on transient
failures; writes (lock, confirm, cancel, stop, check-in, patient creation, bill settlement) are tried once: they
carry a request key, so the caller may retry them later with the same key and get one effect
(docs/his-fhir-profile.md, "Errors").
Billing passes through only for adapters that implement ``HisBilling`` (``billing_for``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TypeVar

from domain.billing.model import OutpatientBill, Settlement
from domain.billing.ports import BillingNotOfferedError, HisBilling
from domain.catalogue.model import (
    Department,
    Doctor,
    HisLock,
    HisRegistration,
    PatientDocument,
    QueuePosition,
    ScheduleSession,
)
from domain.catalogue.ports import HisAdapter, HisUnavailableError
from domain.kernel.clock import Clock
from domain.kernel.errors import NotFoundError
from integrations.resilience import (
    Backoff,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    FailureKind,
    Sleep,
    with_retries,
    with_timeout,
)

T = TypeVar("T")

HIS_FAILURE = FailureKind(HisUnavailableError, "his")


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """The same for every hospital; each hospital gets its own breaker and bulkhead."""

    failure_threshold: int = 5
    reset_after_seconds: float = 30.0
    read_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    call_timeout_seconds: float = 30.0
    """For one adapter call (a full ``sessions`` sync makes many requests; each request has its own timeout)."""
    max_concurrent: int = 8
    max_wait_seconds: float = 5.0
    """How long a call waits for a place in its hospital's bulkhead before failing ``his.saturated``."""


@dataclass(frozen=True, slots=True)
class HisHealth:
    """One hospital's HIS as operators see it (never carries personal data)."""

    hospital_code: str
    breaker: BreakerState
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None
    """The code of the last failure (``his.timeout`` ...)."""
    in_flight: int
    max_concurrent: int
    retry_after_seconds: int | None
    """While the breaker is open: seconds until a probe may pass."""


class _Guard:
    """One hospital's breaker, bulkhead and timeout around calls to its adapter."""

    def __init__(self, hospital_code: str, *, clock: Clock, policy: ResiliencePolicy, sleep: Sleep) -> None:
        self.hospital_code = hospital_code
        self.policy = policy
        self._sleep = sleep
        self.breaker = CircuitBreaker(
            clock=clock,
            failure_threshold=policy.failure_threshold,
            reset_after_seconds=policy.reset_after_seconds,
            kind=HIS_FAILURE,
            name=f"HIS {hospital_code}",
        )
        self.bulkhead = Bulkhead(
            policy.max_concurrent,
            max_wait_seconds=policy.max_wait_seconds,
            kind=HIS_FAILURE,
            name=f"HIS {hospital_code}",
        )

    async def once(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Breaker first (an open circuit fails fast, without queueing), then a bulkhead place, then the call
        under the timeout."""

        async def limited() -> T:
            async with self.bulkhead.slot():
                return await with_timeout(
                    fn, self.policy.call_timeout_seconds, kind=HIS_FAILURE, what=f"HIS {self.hospital_code} {op}"
                )

        return await self.breaker.call(limited)

    async def read(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(
            lambda: self.once(op, fn),
            attempts=self.policy.read_attempts,
            backoff=self.policy.backoff,
            sleep=self._sleep,
        )

    async def write(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.once(op, fn)

    def health(self) -> HisHealth:
        state = self.breaker.state
        return HisHealth(
            hospital_code=self.hospital_code,
            breaker=state,
            consecutive_failures=self.breaker.consecutive_failures,
            last_success_at=self.breaker.last_success_at,
            last_failure_at=self.breaker.last_failure_at,
            last_failure=self.breaker.last_failure,
            in_flight=self.bulkhead.in_flight,
            max_concurrent=self.bulkhead.max_concurrent,
            retry_after_seconds=self.breaker.retry_after_seconds if state is BreakerState.OPEN else None,
        )


class ResilientHisAdapter:
    """A ``HisAdapter`` (and ``HisBilling`` when the adapter inside offers it) calling another through its
    hospital's guard: reads retried, writes once."""

    def __init__(self, adapter: HisAdapter, guard: _Guard) -> None:
        self._adapter = adapter
        self._guard = guard

    @property
    def hospital_code(self) -> str:
        return self._adapter.hospital_code

    @property
    def inner(self) -> HisAdapter:
        return self._adapter

    async def departments(self) -> Sequence[Department]:
        return await self._guard.read("departments", self._adapter.departments)

    async def doctors(self) -> Sequence[Doctor]:
        return await self._guard.read("doctors", self._adapter.doctors)

    async def sessions(
        self, start: date, end: date, *, changed_since: datetime | None = None
    ) -> Sequence[ScheduleSession]:
        return await self._guard.read(
            "sessions", lambda: self._adapter.sessions(start, end, changed_since=changed_since)
        )

    async def session(self, session_id: str) -> ScheduleSession:
        return await self._guard.read("session", lambda: self._adapter.session(session_id))

    async def queue_position(self, registration_id: str) -> QueuePosition:
        return await self._guard.read("queue_position", lambda: self._adapter.queue_position(registration_id))

    async def lock(self, slot_id: str, *, patid: str, key: str) -> HisLock:
        return await self._guard.write("lock", lambda: self._adapter.lock(slot_id, patid=patid, key=key))

    async def unlock(self, lock_id: str, *, key: str) -> None:
        await self._guard.write("unlock", lambda: self._adapter.unlock(lock_id, key=key))

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        return await self._guard.write(
            "confirm", lambda: self._adapter.confirm(slot_id, patid=patid, key=key, lock_id=lock_id)
        )

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        await self._guard.write("cancel", lambda: self._adapter.cancel(registration_id, reason=reason, key=key))

    async def stop_session(self, session_id: str, *, reason: str, key: str) -> None:
        await self._guard.write("stop_session", lambda: self._adapter.stop_session(session_id, reason=reason, key=key))

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition:
        return await self._guard.write("check_in", lambda: self._adapter.check_in(registration_id, key=key))

    async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
        return await self._guard.write("find_or_create", lambda: self._adapter.find_or_create(document, key=key))

    async def find(self, document: PatientDocument) -> str | None:
        return await self._guard.read("find", lambda: self._adapter.find(document))

    # billing: reads retried, the settlement tried once (like confirm)

    @property
    def offers_billing(self) -> bool:
        return isinstance(self._adapter, HisBilling)

    def _billing(self) -> HisBilling:
        adapter = self._adapter
        if not isinstance(adapter, HisBilling):
            raise BillingNotOfferedError(f"the HIS adapter of {self.hospital_code} has no billing")
        return adapter

    async def unpaid_bills(self, patid: str) -> Sequence[OutpatientBill]:
        billing = self._billing()
        return await self._guard.read("unpaid_bills", lambda: billing.unpaid_bills(patid))

    async def bill(self, bill_id: str) -> OutpatientBill:
        billing = self._billing()
        return await self._guard.read("bill", lambda: billing.bill(bill_id))

    async def settle(
        self, bill_id: str, *, patid: str, amount_fen: int, payment_ref: str, channel: str, key: str
    ) -> Settlement:
        billing = self._billing()
        return await self._guard.write(
            "settle",
            lambda: billing.settle(
                bill_id, patid=patid, amount_fen=amount_fen, payment_ref=payment_ref, channel=channel, key=key
            ),
        )


class ResilientHisGateway:
    """``HisGateway`` over a registry of adapters, one guard (breaker, bulkhead, timeout) per hospital."""

    def __init__(
        self,
        *,
        clock: Clock,
        policy: ResiliencePolicy | None = None,
        adapters: Iterable[HisAdapter] = (),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._policy = policy or ResiliencePolicy()
        self._sleep = sleep
        self._entries: dict[str, ResilientHisAdapter] = {}
        self._guards: dict[str, _Guard] = {}
        for adapter in adapters:
            self.register(adapter)

    @property
    def policy(self) -> ResiliencePolicy:
        return self._policy

    def register(self, adapter: HisAdapter) -> None:
        """Add or replace a hospital's adapter (a replaced one starts with a fresh breaker: new settings)."""
        code = adapter.hospital_code
        guard = _Guard(code, clock=self._clock, policy=self._policy, sleep=self._sleep)
        self._guards[code] = guard
        self._entries[code] = ResilientHisAdapter(adapter, guard)

    def unregister(self, hospital_code: str) -> None:
        self._entries.pop(hospital_code, None)
        self._guards.pop(hospital_code, None)

    @property
    def hospital_codes(self) -> list[str]:
        return sorted(self._entries)

    def for_hospital(self, hospital_code: str) -> HisAdapter:
        entry = self._entries.get(hospital_code)
        if entry is None:
            raise NotFoundError(f"no HIS adapter for hospital {hospital_code}", code="his.hospital_not_configured")
        return entry

    def billing_for(self, hospital_code: str) -> HisBilling:
        """The hospital's billing behind its guard; ``BillingNotOfferedError`` when its adapter has none."""
        entry = self._entries.get(hospital_code)
        if entry is None:
            raise NotFoundError(f"no HIS adapter for hospital {hospital_code}", code="his.hospital_not_configured")
        if not entry.offers_billing:
            raise BillingNotOfferedError(f"the HIS adapter of {hospital_code} has no billing")
        return entry

    def health(self) -> list[HisHealth]:
        """Each hospital's breaker state and recent health, by hospital code."""
        return [self._guards[code].health() for code in sorted(self._guards)]
