"""Idempotency-Key on write routes, over HTTP through the real edge and PostgreSQL (DESIGN D8)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx

from domain.kernel.idempotency import IdempotencyScope, IdempotencyState
from persistence.db import ConnectionSource
from persistence.kernel.idempotency import SqlIdempotencyStore
from tests.support.app import FixedClock, Probe, asgi_client, build_test_apps

A = {"Authorization": "Bearer resident-a"}
B = {"Authorization": "Bearer resident-b"}


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_a_retry_replays_the_stored_response_without_running_again(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        first = await client.post("/api/v1/test/echo", json={"text": "挂号"}, headers={**A, **_key("k-1")})
        second = await client.post("/api/v1/test/echo", json={"text": "挂号"}, headers={**A, **_key("k-1")})
    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == first.json() == {"text": "挂号", "amountFen": 0, "run": 1, "subject": "a"}
    assert second.headers["idempotent-replayed"] == "true"
    assert probe.runs == 1


async def test_same_key_with_another_body_is_refused(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        await client.post("/api/v1/test/echo", json={"text": "one"}, headers={**A, **_key("k-2")})
        other = await client.post("/api/v1/test/echo", json={"text": "two"}, headers={**A, **_key("k-2")})
    assert other.status_code == 400
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["code"] == "idempotency.key_reused"
    assert probe.runs == 1


async def test_keys_are_scoped_to_the_principal(committed_source: ConnectionSource) -> None:
    """Another account using the same key runs its own request and never sees A's response."""
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        a = await client.post("/api/v1/test/echo", json={"text": "same"}, headers={**A, **_key("shared")})
        b = await client.post("/api/v1/test/echo", json={"text": "same"}, headers={**B, **_key("shared")})
    assert a.json()["subject"] == "a"
    assert b.json()["subject"] == "b"
    assert "idempotent-replayed" not in b.headers
    assert probe.runs == 2


async def test_a_concurrent_retry_gets_409_with_retry_after(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        first = asyncio.create_task(
            client.post("/api/v1/test/slow", json={"text": "x"}, headers={**A, **_key("k-slow")})
        )
        await asyncio.wait_for(probe.entered.wait(), timeout=10)
        retry = await client.post("/api/v1/test/slow", json={"text": "x"}, headers={**A, **_key("k-slow")})
        probe.gate.set()
        done = await first
    assert retry.status_code == 409
    assert retry.json()["code"] == "idempotency.in_progress"
    assert int(retry.headers["retry-after"]) >= 1
    assert done.status_code == 201
    assert probe.runs == 1


async def test_a_server_error_releases_the_key_so_the_client_may_retry(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        first = await client.post("/api/v1/test/crash", json={"text": "x"}, headers={**A, **_key("k-crash")})
        second = await client.post("/api/v1/test/crash", json={"text": "x"}, headers={**A, **_key("k-crash")})
    assert first.status_code == second.status_code == 500
    assert first.json()["code"] == "internal.error"
    assert probe.runs == 2


async def test_a_client_error_is_replayed_too(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        first = await client.post("/api/v1/test/conflict", json={"text": "x"}, headers={**A, **_key("k-409")})
        second = await client.post("/api/v1/test/conflict", json={"text": "x"}, headers={**A, **_key("k-409")})
    assert first.status_code == second.status_code == 409
    assert second.json()["code"] == "probe.conflict"
    assert probe.runs == 1


async def test_bad_keys_are_refused(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        too_long = await client.post("/api/v1/test/echo", json={"text": "x"}, headers={**A, **_key("k" * 129)})
        spaces = await client.post("/api/v1/test/echo", json={"text": "x"}, headers={**A, **_key("a b")})
    assert too_long.status_code == spaces.status_code == 400
    assert too_long.json()["code"] == "idempotency.key_invalid"
    assert probe.runs == 0


async def test_an_abandoned_in_progress_record_is_taken_over_after_its_lease(
    committed_source: ConnectionSource,
) -> None:
    """A process that died mid-request leaves IN_PROGRESS; after the lease, a retry runs."""
    clock = FixedClock()
    store = SqlIdempotencyStore(committed_source)
    scope = IdempotencyScope(principal="resident:a", method="POST", route="/api/v1/test/echo", key="k-dead")
    first = await store.begin(scope, fingerprint="f", now=clock.now(), lease_seconds=60, retain_seconds=3600)
    assert first.started
    clock.advance(61)
    again = await store.begin(scope, fingerprint="f", now=clock.now(), lease_seconds=60, retain_seconds=3600)
    assert again.started
    assert IdempotencyState.IN_PROGRESS.value == "in_progress"


async def test_expired_records_are_purged(committed_source: ConnectionSource) -> None:
    clock = FixedClock()
    store = SqlIdempotencyStore(committed_source)
    scope = IdempotencyScope(principal="resident:a", method="POST", route="/r", key="k-old")
    await store.begin(scope, fingerprint="f", now=clock.now(), lease_seconds=60, retain_seconds=3600)
    clock.advance(3601)
    assert await store.purge_expired(now=clock.now()) == 1
    assert await store.purge_expired(now=clock.now()) == 0


async def test_requests_without_a_key_are_not_recorded(committed_source: ConnectionSource) -> None:
    probe = Probe()
    app, _, _ = build_test_apps(committed_source, probe=probe)
    async with asgi_client(app) as client:
        for _ in range(2):
            response = await client.post("/api/v1/test/echo", json={"text": "x"}, headers=A)
            assert response.status_code == 201
    assert probe.runs == 2
    assert isinstance(client, httpx.AsyncClient)


class _CompleteFails(SqlIdempotencyStore):
    """The database refuses the record's completion after the answer went out (a busy pool under load)."""

    async def complete(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("pool timeout")


async def test_a_failed_completion_after_the_answer_keeps_the_answer_and_the_connection(
    committed_source: ConnectionSource,
) -> None:
    probe = Probe()
    app, _, deps = build_test_apps(committed_source, probe=probe)
    deps.idempotency = _CompleteFails(committed_source)
    # Exceptions raised by the app reach the client here: a server would close the connection on them.
    transport = httpx.ASGITransport(app=cast(Any, app), raise_app_exceptions=True, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        first = await client.post("/api/v1/test/echo", json={"text": "挂号"}, headers={**A, **_key("k-fail")})
        after = await client.post("/api/v1/test/echo", json={"text": "下一个"}, headers={**A, **_key("k-next")})
    assert first.status_code == 201
    assert first.json()["text"] == "挂号"
    assert after.status_code == 201, "the next request on the same client is served"
