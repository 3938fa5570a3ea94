"""The sandbox framework over real HTTP on loopback: recording, inbound faults, seeds, outbound callbacks."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, Request, Response, get, post

from sandbox.echo import EchoSimulator
from sandbox.framework import (
    SandboxContext,
    build_sandbox_app,
    run_standalone,
    sandbox_route_handlers,
)
from tests.support.clock import ManualClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class Sandbox:
    url: str
    client: httpx.AsyncClient
    ctx: SandboxContext
    clock: ManualClock
    echo: EchoSimulator

    async def set_faults(self, plan: dict[str, Any], simulator: str = "echo") -> None:
        response = await self.client.put(f"/sandbox/admin/{simulator}/faults", json=plan)
        assert response.status_code == 200, response.text

    async def seed(self, seed: int) -> None:
        response = await self.client.post("/sandbox/admin/echo/seed", json={"seed": seed})
        assert response.status_code == 200, response.text

    async def advance(self, seconds: float) -> dict[str, Any]:
        """Advance the shared clock; when this returns, every callback due was attempted."""
        response = await self.client.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def records(self, stream: str = "requests", limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"stream": stream}
        if limit is not None:
            params["limit"] = limit
        response = await self.client.get("/sandbox/admin/echo/requests", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    async def notify(self, url: str, body: Any, **extra: Any) -> str:
        response = await self.client.post("/sandbox/echo/notify", json={"url": url, "body": body, **extra})
        assert response.status_code == 202, response.text
        callback_id: str = response.json()["callbackId"]
        return callback_id


@dataclass
class Receiver:
    """A callback receiver answering from a script of (status, body), then 200 SUCCESS."""

    url: str = ""
    received: list[Any] = field(default_factory=list)
    script: list[tuple[int, str]] = field(default_factory=list)

    @property
    def hook(self) -> str:
        return f"{self.url}/hook"


def receiver_app(receiver: Receiver) -> Litestar:
    @post("/hook")
    async def hook(request: Request[Any, Any, Any]) -> Response[str]:
        receiver.received.append(msgspec.json.decode(await request.body()))
        status, text = receiver.script.pop(0) if receiver.script else (200, "SUCCESS")
        return Response(text, status_code=status, media_type="text/plain")

    return Litestar([hook])


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    echo = EchoSimulator()
    app = build_sandbox_app([echo], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as client,
    ):
        yield Sandbox(url=url, client=client, ctx=ctx, clock=clock, echo=echo)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with run_standalone(receiver_app(receiver)) as url:
        receiver.url = url
        yield receiver


# --- recording ---------------------------------------------------------------------------------------------


async def test_every_inbound_request_is_recorded(sandbox: Sandbox) -> None:
    answer = await sandbox.client.post("/sandbox/echo/echo?x=1&y=2", json={"a": 1}, headers={"X-Trace": "t1"})
    assert answer.status_code == 200
    assert answer.json()["received"] == {"a": 1}
    assert datetime.fromisoformat(answer.json()["now"]) == START

    await sandbox.advance(60)
    raw = b"\xff\x00\xfe"
    rejected = await sandbox.client.post(
        "/sandbox/echo/echo", content=raw, headers={"content-type": "application/json"}
    )
    assert rejected.status_code == 400

    entries = await sandbox.records()
    assert len(entries) == 2, "admin calls must not be recorded"
    first, second = entries
    assert first["type"] == "request"
    assert first["method"] == "POST"
    assert first["path"] == "/echo"
    assert first["query"] == "x=1&y=2"
    assert first["headers"]["x-trace"] == "t1"
    assert msgspec.json.decode(first["body"]) == {"a": 1}
    assert first["bodyEncoding"] == "text"
    assert first["status"] == 200
    assert first["faults"] == []
    assert datetime.fromisoformat(first["at"]) == START
    assert second["bodyEncoding"] == "base64"
    assert base64.b64decode(second["body"]) == raw
    assert second["status"] == 400
    assert datetime.fromisoformat(second["at"]) == START + timedelta(seconds=60)

    assert [e["seq"] for e in await sandbox.records(limit=1)] == [second["seq"]]

    echoed = await sandbox.records(stream="echoed")
    assert [(e["type"], e["data"]) for e in echoed] == [("message", {"a": 1})]

    cleared = await sandbox.client.delete("/sandbox/admin/echo/requests")
    assert cleared.status_code == 204
    assert await sandbox.records() == []
    assert await sandbox.records(stream="echoed") == []


async def test_recorder_is_a_bounded_ring(sandbox: Sandbox) -> None:
    recorder = sandbox.ctx.context("echo").recorder
    for n in range(recorder_capacity := sandbox.ctx.record_capacity + 5):
        recorder.record_message("inbox", {"n": n})
    kept = await sandbox.records(stream="inbox")
    assert len(kept) == sandbox.ctx.record_capacity
    assert kept[-1]["data"] == {"n": recorder_capacity - 1}
    assert kept[0]["data"] == {"n": 5}


# --- inbound faults ----------------------------------------------------------------------------------------


async def test_latency_fault_delays_the_answer(sandbox: Sandbox) -> None:
    await sandbox.set_faults({"inbound": {"latencyMs": 150}})
    started = time.perf_counter()
    answer = await sandbox.client.post("/sandbox/echo/echo", json={})
    assert answer.status_code == 200
    assert time.perf_counter() - started >= 0.15

    assert (await sandbox.client.delete("/sandbox/admin/echo/faults")).status_code == 204
    assert (await sandbox.client.post("/sandbox/echo/echo", json={})).status_code == 200

    slow, fast = await sandbox.records()
    assert slow["faults"] == ["latency"]
    assert slow["elapsedMs"] >= 150
    assert fast["faults"] == []
    assert fast["elapsedMs"] < 150


async def test_timeout_fault_holds_the_request_until_the_client_gives_up(sandbox: Sandbox) -> None:
    await sandbox.set_faults({"inbound": {"timeoutRate": 1.0, "timeoutSeconds": 30}})
    with pytest.raises(httpx.ReadTimeout):
        await sandbox.client.post("/sandbox/echo/echo", json={"late": True}, timeout=0.2)

    # The vendor still does the work once the client is gone; the hold ends with the connection.
    deadline = time.perf_counter() + 1.0
    while True:
        (entry,) = await sandbox.records()
        if entry["elapsedMs"] is not None or time.perf_counter() > deadline:
            break
    assert entry["faults"] == ["timeout"]
    assert entry["elapsedMs"] is not None
    assert 200 <= entry["elapsedMs"] < 5000


async def test_error_rate_one_answers_the_configured_error_without_processing(sandbox: Sandbox) -> None:
    await sandbox.set_faults(
        {"inbound": {"errorRate": 1.0, "errorStatus": 502, "errorBody": '{"code":"SYSTEM_ERROR"}'}}
    )
    for _ in range(3):
        answer = await sandbox.client.post("/sandbox/echo/echo", json={})
        assert answer.status_code == 502
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"code": "SYSTEM_ERROR"}
    assert sandbox.echo.serial == 0

    entries = await sandbox.records()
    assert [(e["status"], e["faults"]) for e in entries] == [(502, ["error"])] * 3


async def test_faults_can_be_limited_to_a_path_prefix(sandbox: Sandbox) -> None:
    await sandbox.set_faults({"inbound": {"pathPrefix": "/notify", "errorRate": 1.0, "errorStatus": 500}})
    assert (await sandbox.client.post("/sandbox/echo/echo", json={})).status_code == 200
    notify = await sandbox.client.post("/sandbox/echo/notify", json={"url": "http://127.0.0.1:9/x"})
    assert notify.status_code == 500
    assert notify.content == b""


async def test_fault_plan_round_trips_and_is_validated(sandbox: Sandbox) -> None:
    plan = {"inbound": {"errorRate": 0.25}, "callbacks": {"reorder": True}}
    await sandbox.set_faults(plan)
    current = (await sandbox.client.get("/sandbox/admin/echo/faults")).json()
    assert current["inbound"]["errorRate"] == 0.25
    assert current["inbound"]["errorStatus"] == 503
    assert current["callbacks"]["reorder"] is True

    too_likely = await sandbox.client.put("/sandbox/admin/echo/faults", json={"inbound": {"errorRate": 1.5}})
    assert too_likely.status_code == 400
    typo = await sandbox.client.put("/sandbox/admin/echo/faults", json={"inbound": {"errorrate": 1}})
    assert typo.status_code == 400
    assert (await sandbox.client.get("/sandbox/admin/echo/faults")).json() == current


async def test_seed_makes_fault_decisions_and_simulator_state_reproducible(sandbox: Sandbox) -> None:
    await sandbox.set_faults({"inbound": {"errorRate": 0.5}})

    async def run(seed: int) -> tuple[list[int], list[str]]:
        await sandbox.seed(seed)
        statuses: list[int] = []
        nonces: list[str] = []
        for _ in range(16):
            answer = await sandbox.client.post("/sandbox/echo/echo", json={})
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                nonces.append(answer.json()["nonce"])
        return statuses, nonces

    first = await run(42)
    assert set(first[0]) == {200, 503}
    assert await run(42) == first
    assert sandbox.echo.serial == first[0].count(200), "seeding resets the simulator's own state"
    assert (await run(43))[0] != first[0]


# --- outbound callbacks ------------------------------------------------------------------------------------


async def test_callback_is_delivered_and_recorded(sandbox: Sandbox, receiver: Receiver) -> None:
    callback_id = await sandbox.notify(receiver.hook, {"n": 1}, headers={"X-Vendor": "echo"})
    clock = await sandbox.advance(0)
    assert receiver.received == [{"n": 1}]
    assert clock["callbackAttempts"] in (0, 1)

    (attempt,) = await sandbox.records(stream="callbacks")
    assert attempt["type"] == "callback"
    assert attempt["callbackId"] == callback_id
    assert attempt["outcome"] == "delivered"
    assert attempt["status"] == 200
    assert attempt["responseBody"] == "SUCCESS"
    assert attempt["url"] == receiver.hook
    assert msgspec.json.decode(attempt["body"]) == {"n": 1}


async def test_dropped_callbacks_never_arrive(sandbox: Sandbox, receiver: Receiver) -> None:
    await sandbox.set_faults({"callbacks": {"dropRate": 1.0}})
    for n in range(3):
        await sandbox.notify(receiver.hook, {"n": n}, retrySchedule=[1, 1])
    await sandbox.advance(0)
    await sandbox.advance(10)
    assert receiver.received == []
    attempts = await sandbox.records(stream="callbacks")
    assert [a["outcome"] for a in attempts] == ["dropped"] * 3


async def test_duplicated_callbacks_arrive_twice(sandbox: Sandbox, receiver: Receiver) -> None:
    await sandbox.set_faults({"callbacks": {"duplicateRate": 1.0}})
    await sandbox.notify(receiver.hook, {"n": 1})
    await sandbox.advance(0)
    assert receiver.received == [{"n": 1}, {"n": 1}]
    attempts = await sandbox.records(stream="callbacks")
    assert sorted(a["copy"] for a in attempts) == [0, 1]
    assert len({a["callbackId"] for a in attempts}) == 1


async def test_delayed_callbacks_wait_for_the_shared_clock(sandbox: Sandbox, receiver: Receiver) -> None:
    await sandbox.set_faults({"callbacks": {"delaySeconds": 30}})
    await sandbox.notify(receiver.hook, {"n": 1})
    await sandbox.advance(0)
    await sandbox.advance(29)
    assert receiver.received == []
    clock = await sandbox.advance(2)
    assert receiver.received == [{"n": 1}]
    assert clock["callbackAttempts"] == 1
    assert datetime.fromisoformat(clock["now"]) == START + timedelta(seconds=31)
    assert clock["offsetSeconds"] == 31

    read = (await sandbox.client.get("/sandbox/admin/clock")).json()
    assert datetime.fromisoformat(read["now"]) == START + timedelta(seconds=31)
    assert read["offsetSeconds"] == 31


async def test_the_periodic_pump_delivers_when_the_clock_moves_elsewhere(receiver: Receiver) -> None:
    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    echo = EchoSimulator()
    app = build_sandbox_app([echo], ctx, pump_interval=0.02)
    async with run_standalone(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        await client.put("/sandbox/admin/echo/faults", json={"callbacks": {"delaySeconds": 60}})
        await client.post("/sandbox/echo/notify", json={"url": receiver.hook, "body": {"n": 1}})
        await asyncio.sleep(0.1)
        assert receiver.received == []
        await clock.advance(61)  # as another process sharing the offset would
        deadline = time.perf_counter() + 1.0
        while not receiver.received and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        assert receiver.received == [{"n": 1}]


@pytest.mark.parametrize(("reorder", "seed"), [(True, 7), (False, 7)])
async def test_reorder_shuffles_a_batch_that_falls_due_together(
    sandbox: Sandbox, receiver: Receiver, reorder: bool, seed: int
) -> None:
    await sandbox.seed(seed)
    await sandbox.set_faults({"callbacks": {"delaySeconds": 10, "reorder": reorder}})
    sent = [{"n": n} for n in range(6)]
    for body in sent:
        await sandbox.notify(receiver.hook, body)
    await sandbox.advance(11)
    assert sorted(receiver.received, key=lambda b: b["n"]) == sent
    if reorder:
        assert receiver.received != sent
    else:
        assert receiver.received == sent


async def test_failed_callbacks_are_retried_per_schedule_as_the_clock_moves(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    receiver.script = [(500, "oops"), (200, "FAIL")]
    await sandbox.notify(receiver.hook, {"n": 1}, retrySchedule=[10, 20, 40], successText="SUCCESS")

    expected = [(0, 1), (9, 1), (2, 2), (19, 2), (1, 3), (1000, 3)]
    for seconds, arrived in expected:
        await sandbox.advance(seconds)
        assert len(receiver.received) == arrived, f"after +{seconds}s"

    attempts = await sandbox.records(stream="callbacks")
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 200, "retrying"),
        (3, 200, "delivered"),
    ]
    assert datetime.fromisoformat(attempts[0]["nextDue"]) == START + timedelta(seconds=10)
    assert datetime.fromisoformat(attempts[1]["nextDue"]) == START + timedelta(seconds=11 + 20)


async def test_callbacks_give_up_when_the_schedule_is_spent(sandbox: Sandbox, receiver: Receiver) -> None:
    receiver.script = [(503, "busy")] * 5
    await sandbox.notify(receiver.hook, {"n": 1}, retrySchedule=[5])
    for seconds in (0, 6, 100):
        await sandbox.advance(seconds)
    assert len(receiver.received) == 2
    outcomes = [a["outcome"] for a in await sandbox.records(stream="callbacks")]
    assert outcomes == ["retrying", "gave-up"]


async def test_unreachable_receiver_is_a_failed_attempt(sandbox: Sandbox) -> None:
    async with run_standalone(Litestar([])) as gone_url:
        pass
    await sandbox.notify(f"{gone_url}/hook", {"n": 1})
    await sandbox.advance(0)
    (attempt,) = await sandbox.records(stream="callbacks")
    assert attempt["outcome"] == "gave-up"
    assert attempt["status"] is None
    assert attempt["error"].startswith("ConnectError")


# --- admin and mounting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sandbox/admin/nope/requests", None),
        ("DELETE", "/sandbox/admin/nope/requests", None),
        ("PUT", "/sandbox/admin/nope/faults", {}),
        ("DELETE", "/sandbox/admin/nope/faults", None),
        ("POST", "/sandbox/admin/nope/seed", {"seed": 1}),
    ],
)
async def test_admin_answers_404_problem_for_an_unknown_simulator(
    sandbox: Sandbox, method: str, path: str, body: dict[str, Any] | None
) -> None:
    answer = await sandbox.client.request(method, path, json=body)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["status"] == 404
    assert problem["code"] == "sandbox.unknown_simulator"
    assert "nope" in problem["detail"]


async def test_simulators_mount_inside_a_host_app(receiver: Receiver) -> None:
    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    clock = ManualClock(START)
    ctx = SandboxContext(clock)
    first, second = EchoSimulator(), EchoSimulator(name="echo-two")
    host = Litestar([healthz, *sandbox_route_handlers([first, second], ctx)])
    async with run_standalone(host) as url, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.post("/sandbox/echo/echo", json={"ok": True})).status_code == 200
        assert (await client.post("/sandbox/echo-two/echo", json={"ok": True})).status_code == 200
        assert (await client.post("/sandbox/echo-two/echo", json={"ok": True})).status_code == 200
        assert (first.serial, second.serial) == (1, 2)
        entries = (await client.get("/sandbox/admin/echo/requests")).json()["entries"]
        assert [e["path"] for e in entries] == ["/echo"]
        entries = (await client.get("/sandbox/admin/echo-two/requests")).json()["entries"]
        assert [e["path"] for e in entries] == ["/echo", "/echo"]
        await client.post("/sandbox/echo/notify", json={"url": receiver.hook, "body": {"n": 1}})
        await client.post("/sandbox/admin/clock", json={"advanceSeconds": 0})
        assert receiver.received == [{"n": 1}]
    await ctx.aclose()


def test_simulator_names_are_checked() -> None:
    ctx = SandboxContext(ManualClock(START))
    ctx.register(EchoSimulator())
    with pytest.raises(ValueError, match="already registered"):
        ctx.register(EchoSimulator())
    with pytest.raises(ValueError, match="bad simulator name"):
        ctx.register(EchoSimulator(name="admin"))
    with pytest.raises(ValueError, match="bad simulator name"):
        ctx.register(EchoSimulator(name="Echo Two"))
