"""Resilience around calls to outside systems: failure categories, per-call timeouts, retries with backoff for
idempotent calls only, a circuit breaker and a concurrency limit (bulkhead).

Every failure of an outside system surfaces as an ``UpstreamError`` (or a subclass the caller chooses, such as
``HisUnavailableError``) whose ``code`` is ``<prefix>.<category>`` and whose ``extra["failure"]`` names the
category, so that retries and breakers can tell a timeout from a refusal without parsing messages:

* transient (worth retrying an idempotent call): ``timeout``, ``transport``, ``throttled`` (HTTP 429),
  ``server_error`` (HTTP 5xx);
* not transient: ``bad_response`` (the answer breaks the protocol), ``circuit_open`` (we fail fast),
  ``saturated`` (our own concurrency limit is full).

A refusal for good (``ConflictError``, ``NotFoundError`` ...) is not a failure of the system: it neither
trips the breaker nor is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from domain.kernel.clock import Clock
from domain.kernel.errors import ConflictError, DomainError, NotFoundError, UpstreamError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


class Failure(StrEnum):
    TIMEOUT = "timeout"
    TRANSPORT = "transport"
    THROTTLED = "throttled"
    SERVER = "server_error"
    BAD_RESPONSE = "bad_response"
    CIRCUIT_OPEN = "circuit_open"
    SATURATED = "saturated"


TRANSIENT: frozenset[Failure] = frozenset({Failure.TIMEOUT, Failure.TRANSPORT, Failure.THROTTLED, Failure.SERVER})
"""Failures after which the same idempotent call may succeed."""

ANSWERED: tuple[type[DomainError], ...] = (ConflictError, NotFoundError)
"""Refusals for good: the outside system answered (a success for a breaker, never retried)."""

NOT_COUNTED: frozenset[Failure] = frozenset({Failure.CIRCUIT_OPEN, Failure.SATURATED})
"""Failures raised on our side, before the outside system was called: they say nothing of its health."""


@dataclass(frozen=True, slots=True)
class FailureKind:
    """How failures are raised for one outside system: the error class and the code prefix."""

    error: type[UpstreamError] = UpstreamError
    prefix: str = "upstream"

    def __call__(self, failure: Failure, detail: str, *, retry_after: int | None = None) -> UpstreamError:
        return self.error(
            detail, code=f"{self.prefix}.{failure.value}", retry_after=retry_after, extra={"failure": failure.value}
        )


def failure_of(exc: BaseException) -> Failure | None:
    """The category of an upstream failure (None for anything else)."""
    if not isinstance(exc, UpstreamError):
        return None
    raw = exc.extra.get("failure")
    try:
        return Failure(str(raw)) if raw is not None else Failure.SERVER
    except ValueError:
        return Failure.SERVER


def is_transient(exc: BaseException) -> bool:
    failure = failure_of(exc)
    return failure is not None and failure in TRANSIENT


def counts_against(exc: BaseException) -> bool:
    """Whether the exception says the outside system is failing (what a breaker counts)."""
    failure = failure_of(exc)
    return failure is not None and failure not in NOT_COUNTED


# --- timeouts ----------------------------------------------------------------------------------------------


async def with_timeout(
    fn: Callable[[], Awaitable[T]], seconds: float, *, kind: FailureKind = FailureKind(), what: str = "call"
) -> T:
    """Await ``fn()`` for at most ``seconds``; past that it is cancelled and a ``timeout`` failure raised."""
    try:
        async with asyncio.timeout(seconds):
            return await fn()
    except TimeoutError:
        raise kind(Failure.TIMEOUT, f"{what}: no answer within {seconds:g} s") from None


# --- retries -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff ``base * factor**(attempt-1)`` capped at ``maximum``, with +-``jitter`` (a ratio)."""

    base_seconds: float = 0.2
    factor: float = 2.0
    maximum_seconds: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """The pause after the ``attempt``-th failed attempt (1-based)."""
        raw = min(self.maximum_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        if self.jitter <= 0 or raw <= 0:
            return raw
        spread = raw * self.jitter
        return max(0.0, raw + _RANDOM.uniform(-spread, spread))


_RANDOM = secrets.SystemRandom()


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    backoff: Backoff = Backoff(),
    retry_if: Callable[[BaseException], bool] = is_transient,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Call ``fn`` up to ``attempts`` times while it fails with a retryable error.

    Only for idempotent calls (reads, or writes the outside system deduplicates by key): a write that timed out
    may have taken effect. A ``retry_after`` the system asked for (HTTP 429/503) is honoured up to the backoff's
    maximum.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt >= attempts or not retry_if(exc):
                raise
            pause = backoff.delay(attempt)
            asked = getattr(exc, "retry_after", None)
            if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
                pause = max(pause, min(float(asked), backoff.maximum_seconds))
            await sleep(pause)
            attempt += 1


# --- circuit breaker ---------------------------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails fast while an outside system is down.

    Closed: calls pass; ``failure_threshold`` consecutive failures open it. Open: calls fail at once with a
    ``circuit_open`` failure carrying ``retry_after``, until ``reset_after_seconds`` have passed on the clock.
    Half-open: one probe call at a time passes; its success closes the breaker, its failure opens it again for
    another cool-down. Refusals for good (``ConflictError``, ``NotFoundError``) count as successes: the system
    answered. Anything else (our own validation, a bug, a cancellation) is neither: it only frees the probe.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        reset_after_seconds: float = 30.0,
        kind: FailureKind = FailureKind(),
        name: str = "upstream",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after_seconds <= 0:
            raise ValueError("reset_after_seconds must be positive")
        self._clock = clock
        self._threshold = failure_threshold
        self._reset_after = reset_after_seconds
        self._kind = kind
        self.name = name
        self._state = BreakerState.CLOSED
        self._opened_at: datetime | None = None
        self._probing = False
        self.consecutive_failures = 0
        self.last_success_at: datetime | None = None
        self.last_failure_at: datetime | None = None
        self.last_failure: str | None = None
        """The code of the last failure (never its message)."""

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._remaining() <= 0:
            return BreakerState.HALF_OPEN
        return self._state

    def _remaining(self) -> float:
        if self._opened_at is None:
            return 0.0
        return self._reset_after - (self._clock.now() - self._opened_at).total_seconds()

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until a probe may pass (at least 1 while open)."""
        return max(1, math.ceil(self._remaining()))

    def before_call(self) -> None:
        """Raise ``circuit_open`` when the call may not pass; otherwise let it through (maybe as the probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._state = BreakerState.HALF_OPEN
            self._probing = True
            return
        retry_after = self.retry_after_seconds if state is BreakerState.OPEN else 1
        raise self._kind(
            Failure.CIRCUIT_OPEN,
            f"{self.name}: circuit open after {self.consecutive_failures} consecutive failures",
            retry_after=retry_after,
        )

    def record_success(self) -> None:
        self._probing = False
        self._state = BreakerState.CLOSED
        self._opened_at = None
        self.consecutive_failures = 0
        self.last_success_at = self._clock.now()

    def record_failure(self, code: str | None = None) -> None:
        now = self._clock.now()
        self.consecutive_failures += 1
        self.last_failure_at = now
        self.last_failure = code
        if self._probing or self._state is BreakerState.HALF_OPEN or self.consecutive_failures >= self._threshold:
            self._state = BreakerState.OPEN
            self._opened_at = now
        self._probing = False

    def release(self) -> None:
        """The call ended with neither verdict (a bug on our side, a cancellation): free the probe slot."""
        self._probing = False

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        self.before_call()
        try:
            result = await fn()
        except DomainError as exc:
            if counts_against(exc):
                self.record_failure(exc.code)
            elif isinstance(exc, ANSWERED):
                self.record_success()
            else:
                self.release()
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()
        return result


# --- bulkhead ----------------------------------------------------------------------------------------------


class Bulkhead:
    """At most ``max_concurrent`` calls at once; a caller waits up to ``max_wait_seconds`` for a place (None:
    as long as it takes), then gets a ``saturated`` failure. One bulkhead per outside system keeps a slow one
    from taking every connection and task from the others."""

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_wait_seconds: float | None = None,
        kind: FailureKind = FailureKind(),
        name: str = "upstream",
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._max_wait = max_wait_seconds
        self._kind = kind
        self.name = name
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            if self._max_wait is None:
                await self._semaphore.acquire()
            else:
                async with asyncio.timeout(self._max_wait):
                    await self._semaphore.acquire()
        except TimeoutError:
            raise self._kind(
                Failure.SATURATED,
                f"{self.name}: {self.max_concurrent} calls already in flight",
                retry_after=1,
            ) from None
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._semaphore.release()

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self.slot():
            return await fn()
