"""Resilience around outside systems (integrations/resilience.py) and the HIS gateway built on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from domain.catalogue.model import (
    Department,
    Doctor,
    HisLock,
    HisRegistration,
    PatientDocument,
    QueuePosition,
    ScheduleSession,
)
from domain.catalogue.ports import HisAdapter, HisRejectedError, HisUnavailableError
from domain.kernel.errors import NotFoundError, UpstreamError, ValidationError
from integrations.his.gateway import ResiliencePolicy, ResilientHisGateway
from integrations.resilience import (
    Backoff,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    Failure,
    FailureKind,
    failure_of,
    is_transient,
    with_retries,
    with_timeout,
)
from tests.support.clock import ManualClock

START = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
HIS = FailureKind(HisUnavailableError, "his")
NO_JITTER = Backoff(base_seconds=0.1, factor=2.0, maximum_seconds=1.0, jitter=0.0)


def server_error() -> UpstreamError:
    return HIS(Failure.SERVER, "HIS H1: HTTP 503")


class Sleeps:
    """A fake ``asyncio.sleep`` that records the pauses."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


@dataclass
class ScriptedHis:
    """A HisAdapter whose calls follow a script: each entry is an exception to raise or a value to return."""

    hospital_code: str = "H1"
    script: list[Any] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """When set, every call waits for it (a slow HIS)."""
    delay: float = 0.0

    async def _next(self, name: str, default: Any = None) -> Any:
        self.calls.append(name)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        step = self.script.pop(0) if self.script else default
        if isinstance(step, BaseException):
            raise step
        return step

    async def departments(self) -> Sequence[Department]:
        result: Sequence[Department] = await self._next("departments", [])
        return result

    async def doctors(self) -> Sequence[Doctor]:
        result: Sequence[Doctor] = await self._next("doctors", [])
        return result

    async def sessions(
        self, start: date, end: date, *, changed_since: datetime | None = None
    ) -> Sequence[ScheduleSession]:
        result: Sequence[ScheduleSession] = await self._next("sessions", [])
        return result

    async def session(self, session_id: str) -> ScheduleSession:
        result: ScheduleSession = await self._next("session")
        return result

    async def lock(self, slot_id: str, *, patid: str, key: str) -> HisLock:
        result: HisLock = await self._next("lock", HisLock("L1", None))
        return result

    async def unlock(self, lock_id: str, *, key: str) -> None:
        await self._next("unlock")

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        result: HisRegistration = await self._next("confirm", HisRegistration("R1", 3))
        return result

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        await self._next("cancel")

    async def stop_session(self, session_id: str, *, reason: str, key: str) -> None:
        await self._next("stop_session")

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition:
        result: QueuePosition = await self._next("check_in", QueuePosition(0))
        return result

    async def queue_position(self, registration_id: str) -> QueuePosition:
        result: QueuePosition = await self._next("queue_position", QueuePosition(0))
        return result

    async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
        result: str = await self._next("find_or_create", "0001")
        return result

    async def find(self, document: PatientDocument) -> str | None:
        result: str | None = await self._next("find", None)
        return result


def _adapter(his: ScriptedHis) -> HisAdapter:
    return his


def gateway(
    *adapters: ScriptedHis, clock: ManualClock | None = None, sleep: Sleeps | None = None, **policy: Any
) -> ResilientHisGateway:
    settings = {"failure_threshold": 3, "reset_after_seconds": 30.0, "backoff": NO_JITTER, **policy}
    return ResilientHisGateway(
        clock=clock or ManualClock(START),
        policy=ResiliencePolicy(**settings),
        adapters=[_adapter(a) for a in adapters],
        sleep=sleep or Sleeps(),
    )


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state as read now (a call, so that type narrowing does not carry across awaits)."""
    return breaker.state


async def _fail(exc: BaseException) -> None:
    raise exc


async def _ok() -> str:
    return "ok"


# --- failure categories ------------------------------------------------------------------------------------


def test_failures_carry_their_category_in_code_and_extra() -> None:
    error = HIS(Failure.THROTTLED, "HIS H1: HTTP 429", retry_after=7)
    assert isinstance(error, HisUnavailableError)
    assert (error.code, error.retry_after, failure_of(error)) == ("his.throttled", 7, Failure.THROTTLED)
    assert is_transient(error)
    assert not is_transient(HIS(Failure.BAD_RESPONSE, "x"))
    assert not is_transient(HIS(Failure.CIRCUIT_OPEN, "x"))
    assert not is_transient(HisRejectedError("slot full", code="his.slot_full"))
    assert not is_transient(ValueError("bug"))
    assert is_transient(HisUnavailableError("a fake's plain unavailable"))  # uncategorised upstream: transient


# --- circuit breaker ---------------------------------------------------------------------------------------


async def test_breaker_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock=clock, failure_threshold=3, reset_after_seconds=30, kind=HIS)
    for _ in range(2):
        with pytest.raises(HisUnavailableError):
            await breaker.call(lambda: _fail(server_error()))
    assert state_of(breaker) is BreakerState.CLOSED
    with pytest.raises(HisUnavailableError):
        await breaker.call(lambda: _fail(server_error()))
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.consecutive_failures == 3

    called: list[bool] = []

    async def tracked() -> str:
        called.append(True)
        return "ok"

    await clock.advance(10)
    with pytest.raises(HisUnavailableError) as caught:
        await breaker.call(tracked)
    assert caught.value.code == "his.circuit_open"
    assert caught.value.retry_after == 20
    assert called == []


async def test_a_success_resets_the_count_and_refusals_are_not_failures() -> None:
    breaker = CircuitBreaker(clock=ManualClock(START), failure_threshold=2, reset_after_seconds=30, kind=HIS)
    with pytest.raises(HisUnavailableError):
        await breaker.call(lambda: _fail(server_error()))
    assert await breaker.call(_ok) == "ok"
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        with pytest.raises(HisRejectedError):
            await breaker.call(lambda: _fail(HisRejectedError("full", code="his.slot_full")))
    assert state_of(breaker) is BreakerState.CLOSED


async def test_half_open_after_the_cool_down_lets_one_probe_through_and_closes_on_success() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_seconds=30, kind=HIS)
    with pytest.raises(HisUnavailableError):
        await breaker.call(lambda: _fail(server_error()))
    assert state_of(breaker) is BreakerState.OPEN
    await clock.advance(30)
    assert state_of(breaker) is BreakerState.HALF_OPEN

    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "probed"

    probing = asyncio.create_task(breaker.call(probe))
    await asyncio.sleep(0)
    with pytest.raises(HisUnavailableError) as caught:  # one probe at a time
        await breaker.call(_ok)
    assert caught.value.code == "his.circuit_open"
    release.set()
    assert await probing == "probed"
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.last_success_at == clock.now()


async def test_a_failed_probe_opens_the_breaker_for_another_cool_down() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_seconds=30, kind=HIS)
    with pytest.raises(HisUnavailableError):
        await breaker.call(lambda: _fail(server_error()))
    await clock.advance(31)
    with pytest.raises(HisUnavailableError) as probe:
        await breaker.call(lambda: _fail(HIS(Failure.TIMEOUT, "slow")))
    assert probe.value.code == "his.timeout"
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.retry_after_seconds == 30
    assert breaker.last_failure == "his.timeout"
    await clock.advance(29)
    assert state_of(breaker) is BreakerState.OPEN
    await clock.advance(1)
    assert state_of(breaker) is BreakerState.HALF_OPEN


async def test_a_probe_ending_in_a_bug_frees_the_probe_slot() -> None:
    clock = ManualClock(START)
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_seconds=30, kind=HIS)
    with pytest.raises(HisUnavailableError):
        await breaker.call(lambda: _fail(server_error()))
    await clock.advance(30)
    with pytest.raises(ZeroDivisionError):
        await breaker.call(lambda: _fail(ZeroDivisionError()))
    with pytest.raises(ValidationError):  # our own input: says nothing of the HIS either
        await breaker.call(lambda: _fail(ValidationError("no document")))
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert await breaker.call(_ok) == "ok"
    assert state_of(breaker) is BreakerState.CLOSED


# --- retries and timeouts ----------------------------------------------------------------------------------


async def test_with_retries_backs_off_exponentially_on_transient_failures() -> None:
    sleeps = Sleeps()
    script: list[BaseException | str] = [server_error(), HIS(Failure.TRANSPORT, "reset"), "done"]

    async def flaky() -> str:
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    assert await with_retries(flaky, attempts=3, backoff=NO_JITTER, sleep=sleeps) == "done"
    assert sleeps.pauses == [0.1, 0.2]


async def test_with_retries_gives_up_after_the_attempts_and_never_retries_refusals() -> None:
    sleeps = Sleeps()
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise server_error()

    with pytest.raises(HisUnavailableError):
        await with_retries(down, attempts=3, backoff=NO_JITTER, sleep=sleeps)
    assert len(calls) == 3

    async def refused() -> None:
        calls.append(2)
        raise HisRejectedError("gone", code="his.not_found")

    with pytest.raises(HisRejectedError):
        await with_retries(refused, attempts=3, backoff=NO_JITTER, sleep=sleeps)
    assert calls.count(2) == 1


async def test_with_retries_honours_retry_after_up_to_the_cap() -> None:
    sleeps = Sleeps()
    script: list[BaseException | str] = [HIS(Failure.THROTTLED, "429", retry_after=60), "ok"]

    async def throttled() -> str:
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    assert await with_retries(throttled, attempts=2, backoff=NO_JITTER, sleep=sleeps) == "ok"
    assert sleeps.pauses == [1.0]


def test_backoff_jitter_stays_within_its_spread() -> None:
    backoff = Backoff(base_seconds=1.0, factor=2.0, maximum_seconds=8.0, jitter=0.25)
    for attempt, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        for _ in range(20):
            assert nominal * 0.75 <= backoff.delay(attempt) <= nominal * 1.25


async def test_with_timeout_maps_to_a_timeout_failure() -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(HisUnavailableError) as caught:
        await with_timeout(slow, 0.01, kind=HIS, what="HIS H1 departments")
    assert caught.value.code == "his.timeout"
    assert failure_of(caught.value) is Failure.TIMEOUT


# --- bulkhead ----------------------------------------------------------------------------------------------


async def test_bulkhead_limits_concurrency_and_refuses_past_the_wait() -> None:
    bulkhead = Bulkhead(2, max_wait_seconds=0.02, kind=HIS, name="HIS H1")
    release = asyncio.Event()
    running = [asyncio.create_task(bulkhead.run(release.wait)) for _ in range(2)]
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 2
    with pytest.raises(HisUnavailableError) as caught:
        await bulkhead.run(_ok)
    assert caught.value.code == "his.saturated"
    release.set()
    await asyncio.gather(*running)
    assert bulkhead.in_flight == 0
    assert await bulkhead.run(_ok) == "ok"


# --- the gateway -------------------------------------------------------------------------------------------


async def test_gateway_retries_reads_but_not_writes() -> None:
    sleeps = Sleeps()
    his = ScriptedHis(script=[server_error(), server_error(), []])
    gw = gateway(his, sleep=sleeps)
    assert await gw.for_hospital("H1").departments() == []
    assert his.calls == ["departments"] * 3
    assert sleeps.pauses == [0.1, 0.2]

    his.calls.clear()
    his.script = [server_error()]
    with pytest.raises(HisUnavailableError):
        await gw.for_hospital("H1").lock("S1", patid="p", key="k")
    his.script = [HIS(Failure.TIMEOUT, "x")]
    with pytest.raises(HisUnavailableError):
        await gw.for_hospital("H1").confirm("S1", patid="p", key="k")
    assert his.calls == ["lock", "confirm"]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda a: a.unlock("L", key="k"), "unlock"),
        (lambda a: a.cancel("R", reason="r", key="k"), "cancel"),
        (lambda a: a.stop_session("S", reason="r", key="k"), "stop_session"),
        (lambda a: a.check_in("R", key="k"), "check_in"),
        (lambda a: a.find_or_create(PatientDocument("张三", "M", date(1990, 1, 1)), key="k"), "find_or_create"),
    ],
)
async def test_every_write_is_tried_once(call: Callable[[HisAdapter], Any], name: str) -> None:
    his = ScriptedHis(script=[server_error()])
    with pytest.raises(HisUnavailableError):
        await call(gateway(his).for_hospital("H1"))
    assert his.calls == [name]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda a: a.doctors(), "doctors"),
        (lambda a: a.sessions(date(2025, 3, 3), date(2025, 3, 9)), "sessions"),
        (lambda a: a.session("S"), "session"),
        (lambda a: a.queue_position("R"), "queue_position"),
        (lambda a: a.find(PatientDocument("张三", "M", date(1990, 1, 1))), "find"),
    ],
)
async def test_every_read_is_retried(call: Callable[[HisAdapter], Any], name: str) -> None:
    his = ScriptedHis(script=[server_error(), server_error(), server_error()])
    with pytest.raises(HisUnavailableError):
        await call(gateway(his).for_hospital("H1"))
    assert his.calls == [name] * 3


async def test_gateway_timeouts_are_his_unavailable() -> None:
    his = ScriptedHis(delay=5.0)
    gw = gateway(his, call_timeout_seconds=0.02, read_attempts=1)
    with pytest.raises(HisUnavailableError) as caught:
        await gw.for_hospital("H1").departments()
    assert caught.value.code == "his.timeout"
    assert gw.health()[0].last_failure == "his.timeout"


async def test_an_open_breaker_fails_fast_with_retry_after_and_reports_its_health() -> None:
    clock = ManualClock(START)
    his = ScriptedHis(script=[server_error()] * 3)
    gw = gateway(his, clock=clock, read_attempts=1)
    adapter = gw.for_hospital("H1")
    for _ in range(3):
        with pytest.raises(HisUnavailableError):
            await adapter.departments()
    await clock.advance(5)
    with pytest.raises(HisUnavailableError) as caught:
        await adapter.confirm("S1", patid="p", key="k")
    assert caught.value.code == "his.circuit_open"
    assert caught.value.retry_after == 25
    assert his.calls == ["departments"] * 3  # the write never reached the HIS

    (health,) = gw.health()
    assert health.hospital_code == "H1"
    assert health.breaker is BreakerState.OPEN
    assert health.consecutive_failures == 3
    assert health.last_failure_at == START
    assert health.last_success_at is None
    assert health.last_failure == "his.server_error"
    assert health.retry_after_seconds == 25

    await clock.advance(25)
    assert gw.health()[0].breaker is BreakerState.HALF_OPEN
    assert await adapter.departments() == []
    health = gw.health()[0]
    assert (health.breaker, health.consecutive_failures, health.last_success_at) == (
        BreakerState.CLOSED,
        0,
        clock.now(),
    )


async def test_retries_stop_when_the_breaker_opens() -> None:
    sleeps = Sleeps()
    his = ScriptedHis(script=[server_error()] * 5)
    gw = gateway(his, sleep=sleeps, failure_threshold=2, read_attempts=5)
    with pytest.raises(HisUnavailableError) as caught:
        await gw.for_hospital("H1").departments()
    assert caught.value.code == "his.circuit_open"
    assert his.calls == ["departments"] * 2


async def test_a_slow_hospital_does_not_slow_another() -> None:
    slow = ScriptedHis("H1", gate=asyncio.Event())
    fast = ScriptedHis("H2")
    gw = gateway(slow, fast, max_concurrent=2, max_wait_seconds=0.05, read_attempts=1)
    stuck = [asyncio.create_task(gw.for_hospital("H1").departments()) for _ in range(2)]
    await asyncio.sleep(0.01)
    health = {h.hospital_code: h for h in gw.health()}
    assert (health["H1"].in_flight, health["H2"].in_flight) == (2, 0)

    loop = asyncio.get_running_loop()
    began = loop.time()
    results = await asyncio.gather(*(gw.for_hospital("H2").departments() for _ in range(10)))
    assert results == [[]] * 10
    assert loop.time() - began < 1.0  # H2 never queued behind H1 (a shared limit would have refused them)

    with pytest.raises(HisUnavailableError) as caught:  # H1 is full: its next caller is turned away
        await gw.for_hospital("H1").departments()
    assert caught.value.code == "his.saturated"
    assert gw.health()[0].breaker is BreakerState.CLOSED  # our own limit is no failure of the HIS

    assert slow.gate is not None
    slow.gate.set()
    assert await asyncio.gather(*stuck) == [[], []]
    assert {h.hospital_code: h.in_flight for h in gw.health()} == {"H1": 0, "H2": 0}


async def test_gateway_registry() -> None:
    gw = gateway(ScriptedHis("H2"), ScriptedHis("H1"))
    assert gw.hospital_codes == ["H1", "H2"]
    assert gw.for_hospital("H1").hospital_code == "H1"
    with pytest.raises(NotFoundError) as caught:
        gw.for_hospital("H9")
    assert caught.value.code == "his.hospital_not_configured"
    gw.unregister("H2")
    assert [h.hospital_code for h in gw.health()] == ["H1"]
