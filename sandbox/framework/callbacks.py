"""Outbound callbacks (payment notifications, HIS pushes ...) delivered over HTTP under the fault plan.

``send`` only queues: a callback is attempted when it falls due on the shared clock, either by the
background kick that follows a ``send`` with nothing to wait for, or by ``deliver_due`` (called after the
clock is advanced, and periodically). A failed attempt is retried per the callback's retry schedule, each
retry due that many seconds of shared-clock time after the previous attempt.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from domain.kernel.clock import Clock
from sandbox.framework.faults import CallbackFaults, chance
from sandbox.framework.records import CallbackOutcome, CallbackRecord, Recorder, encode_body

logger = logging.getLogger(__name__)

IsSuccess = Callable[[httpx.Response], bool]
"""Whether the receiver acknowledged the callback (vendors often want a body such as ``SUCCESS``)."""

RESPONSE_BODY_LIMIT = 2000


def is_2xx(response: httpx.Response) -> bool:
    return response.is_success


@dataclass(eq=False)
class _Pending:
    callback_id: str
    copy: int
    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    retry_schedule: tuple[float, ...]
    is_success: IsSuccess
    due: datetime
    order: int
    attempts: int = 0


class CallbackDispatcher:
    """One simulator's queue of outbound callbacks."""

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        recorder: Recorder,
        rng: random.Random,
        faults: Callable[[], CallbackFaults],
        timeout: float = 5.0,
    ) -> None:
        self._name = name
        self._clock = clock
        self._recorder = recorder
        self._rng = rng
        self._faults = faults
        self._timeout = timeout
        self._pending: list[_Pending] = []
        self._ids = itertools.count(1)
        self._order = itertools.count()
        self._generation = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[int]] = set()

    @property
    def pending(self) -> int:
        """How many callback attempts are queued (not counting the batch being delivered)."""
        return len(self._pending)

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "POST",
        retry_schedule: Sequence[float] = (),
        is_success: IsSuccess = is_2xx,
    ) -> str:
        """Queue a callback and return its id; faults (drop, duplicate, delay) are decided now."""
        schedule = tuple(float(s) for s in retry_schedule)
        if any(s < 0 for s in schedule):
            raise ValueError("retry intervals must not be negative")
        callback_id = f"{self._name}-{next(self._ids)}"
        faults = self._faults()
        now = self._clock.now()
        if chance(self._rng, faults.drop_rate):
            self._record(
                callback_id=callback_id, copy=0, attempt=0, method=method, url=url, body=body, outcome="dropped"
            )
            return callback_id
        copies = 2 if chance(self._rng, faults.duplicate_rate) else 1
        due = now + timedelta(seconds=faults.delay_seconds)
        for copy in range(copies):
            self._pending.append(
                _Pending(
                    callback_id=callback_id,
                    copy=copy,
                    method=method,
                    url=url,
                    body=body,
                    headers=dict(headers or {}),
                    retry_schedule=schedule,
                    is_success=is_success,
                    due=due,
                    order=next(self._order),
                )
            )
        if due <= now:
            self._kick()
        return callback_id

    def _kick(self) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver_due())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("callback delivery of %s failed", self._name, exc_info=exc)

    async def deliver_due(self) -> int:
        """Attempt every callback due on the shared clock; returns the number of attempts made.

        Runs one batch at a time, so that when it returns every callback due at its start was attempted.
        """
        async with self._lock:
            now = self._clock.now()
            batch = sorted((p for p in self._pending if p.due <= now), key=lambda p: (p.due, p.order))
            if not batch:
                return 0
            self._pending = [p for p in self._pending if p.due > now]
            if self._faults().reorder:
                self._rng.shuffle(batch)
            generation = self._generation
            async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
                for item in batch:
                    retry = await self._attempt(client, item)
                    if retry and generation == self._generation:
                        self._pending.append(item)
            return len(batch)

    async def _attempt(self, client: httpx.AsyncClient, item: _Pending) -> bool:
        """One delivery attempt, recorded; True when it is to be retried."""
        item.attempts += 1
        status: int | None = None
        error: str | None = None
        response_body: str | None = None
        ok = False
        try:
            response = await client.request(item.method, item.url, content=item.body, headers=item.headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            response_body = response.text[:RESPONSE_BODY_LIMIT]
            try:
                ok = item.is_success(response)
            except Exception as exc:
                logger.exception("the success check of callback %s raised", item.callback_id)
                error = f"{type(exc).__name__} in the success check: {exc}"
        outcome: CallbackOutcome
        next_due: datetime | None = None
        if ok:
            outcome = "delivered"
        elif item.attempts <= len(item.retry_schedule):
            outcome = "retrying"
            next_due = self._clock.now() + timedelta(seconds=item.retry_schedule[item.attempts - 1])
            item.due = next_due
            item.order = next(self._order)
        else:
            outcome = "gave-up"
        self._record(
            callback_id=item.callback_id,
            copy=item.copy,
            attempt=item.attempts,
            method=item.method,
            url=item.url,
            body=item.body,
            outcome=outcome,
            status=status,
            error=error,
            response_body=response_body,
            next_due=next_due,
        )
        return outcome == "retrying"

    def _record(
        self,
        *,
        callback_id: str,
        copy: int,
        attempt: int,
        method: str,
        url: str,
        body: bytes,
        outcome: CallbackOutcome,
        status: int | None = None,
        error: str | None = None,
        response_body: str | None = None,
        next_due: datetime | None = None,
    ) -> None:
        text, encoding = encode_body(body)
        self._recorder.record_callback(
            CallbackRecord(
                seq=self._recorder.next_seq(),
                at=self._recorder.now(),
                callback_id=callback_id,
                copy=copy,
                attempt=attempt,
                method=method,
                url=url,
                body=text,
                body_encoding=encoding,
                outcome=outcome,
                status=status,
                error=error,
                response_body=response_body,
                next_due=next_due,
            )
        )

    def clear(self) -> None:
        """Forget every queued callback (a batch being delivered finishes, without its retries)."""
        self._pending.clear()
        self._generation += 1

    async def wait_idle(self) -> None:
        """Wait for the background deliveries started by ``send``."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel background deliveries (at shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
