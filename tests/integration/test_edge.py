"""The HTTP edge: problem+json for every error, 422 with field paths, body limit, security headers,
request ids, rate limits with Retry-After, the admin listener (DESIGN D7, D8)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bff.deps import EdgeConfig
from persistence.db import ConnectionSource
from persistence.ephemeral.ratelimit import LimitsRateLimiter
from persistence.ephemeral.redis_store import RedisEphemeralStore
from tests.support.app import Probe, asgi_client, build_test_apps

A = {"Authorization": "Bearer resident-a"}


async def test_payload_validation_is_422_with_field_paths(uow_source: ConnectionSource) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        response = await client.post("/api/v1/test/echo", json={"amountFen": "ten"}, headers=A)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "request.invalid"
    assert body["message"] == "请求参数有误，请检查后重试"
    assert body["status"] == 422
    assert body["errors"], body
    assert all("field" in e for e in body["errors"])


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'{"text": 1}', "application/json"),
        (b"text=1", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_never_answer_5xx(
    uow_source: ConnectionSource, content: bytes, content_type: str
) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        response = await client.post("/api/v1/test/echo", content=content, headers={**A, "Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"]


async def test_a_body_over_the_limit_is_413(uow_source: ConnectionSource) -> None:
    app, _, _ = build_test_apps(
        uow_source, config=EdgeConfig(env="test", max_body_bytes=1024, rate_limit_enabled=False)
    )
    big = {"text": "x" * 5000}
    async with asgi_client(app) as client:
        plain = await client.post("/api/v1/test/echo", json=big, headers=A)
        keyed = await client.post("/api/v1/test/echo", json=big, headers={**A, "Idempotency-Key": "big-1"})
    assert plain.status_code == 413
    assert keyed.status_code == 413
    assert keyed.json()["code"] == "request.too_large"


async def test_unknown_routes_and_methods_are_problems_with_security_headers(uow_source: ConnectionSource) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        missing = await client.get("/api/v1/nope")
        wrong_method = await client.delete("/api/v1/meta/time")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert missing.json()["message"] == "您要找的内容不存在"
    assert wrong_method.status_code == 405
    for response in (missing, wrong_method):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert len(response.headers["x-request-id"]) >= 8


async def test_request_ids_are_echoed_when_well_formed(uow_source: ConnectionSource) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        kept = await client.get("/api/v1/meta/time", headers={"X-Request-Id": "req-12345678"})
        replaced = await client.get("/api/v1/meta/time", headers={"X-Request-Id": "bad id\nwith newline"})
    assert kept.headers["x-request-id"] == "req-12345678"
    assert replaced.headers["x-request-id"] != "bad id\nwith newline"


async def test_a_protected_route_without_or_with_a_bad_token_is_401(uow_source: ConnectionSource) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        missing = await client.post("/api/v1/test/echo", json={"text": "x"})
        bad = await client.post("/api/v1/test/echo", json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401
    assert missing.json()["code"] == "auth.unauthenticated"
    assert bad.status_code == 401
    assert bad.json()["code"] == "auth.token_invalid"


async def test_docs_and_health_live_on_the_admin_listener_only(uow_source: ConnectionSource) -> None:
    public, admin, _ = build_test_apps(uow_source)
    async with asgi_client(public) as client:
        for path in ("/docs", "/docs/openapi.json", "/healthz", "/readyz", "/metrics", "/_openapi/openapi.json"):
            assert (await client.get(path)).status_code == 404, path
    async with asgi_client(admin) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == [{"name": "database", "ok": True}]
        spec = (await client.get("/docs/openapi.json")).json()
        assert "/api/v1/meta/time" in spec["paths"]
        assert not any(p.startswith("/_openapi") for p in spec["paths"])
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "hsp_http" in metrics.text


async def test_readiness_fails_when_a_check_fails(uow_source: ConnectionSource) -> None:
    _, admin, deps = build_test_apps(uow_source)

    async def broken() -> None:
        raise ConnectionError("redis down")

    deps.readiness["redis"] = broken
    async with asgi_client(admin) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["redis"]["ok"] is False
    assert checks["database"]["ok"] is True


async def test_rate_limit_answers_429_with_retry_after(
    uow_source: ConnectionSource, redis_url: str, redis_prefix: str
) -> None:
    limiter = LimitsRateLimiter.redis(redis_url, prefix=redis_prefix + "edge429:")
    config = EdgeConfig(env="test", per_account_per_minute=3, per_ip_per_minute=100)
    app, _, _ = build_test_apps(uow_source, rate_limiter=limiter, config=config, probe=Probe())
    statuses = []
    async with asgi_client(app) as client:
        for _ in range(5):
            response = await client.get("/api/v1/meta/time", headers={"Authorization": "Bearer resident-rl"})
            statuses.append(response.status_code)
        other = await client.get("/api/v1/meta/time", headers={"Authorization": "Bearer resident-other"})
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    assert other.status_code == 200, "limits are per account"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["code"] == "rate_limited"
    assert response.json()["message"] == "操作太频繁，请稍后再试"
    store = RedisEphemeralStore.from_url(redis_url, prefix="")
    await store.client.delete(*[k async for k in store.client.scan_iter(match=redis_prefix + "edge429:*")])
    await store.close()


async def test_anonymous_callers_are_limited_per_real_client_ip(uow_source: ConnectionSource) -> None:
    limiter = LimitsRateLimiter.memory()
    config = EdgeConfig(
        env="test",
        per_ip_per_minute=2,
        trusted_proxies=EdgeConfig.parse_proxies(["10.0.0.0/8"]),
    )
    app, _, _ = build_test_apps(uow_source, rate_limiter=limiter, config=config)
    transport_ip = "10.1.2.3"  # the load balancer
    async with asgi_client(app, client_ip=transport_ip) as client:
        one = [
            (await client.get("/api/v1/meta/time", headers={"X-Forwarded-For": "198.51.100.1"})).status_code
            for _ in range(3)
        ]
        two = (await client.get("/api/v1/meta/time", headers={"X-Forwarded-For": "198.51.100.2"})).status_code
    assert one == [200, 200, 429]
    assert two == 200


async def test_when_the_limit_store_is_down_plain_limits_let_requests_through(uow_source: ConnectionSource) -> None:
    """D1: only security checks fail closed; the general API limit falls open when Redis is down."""
    limiter = LimitsRateLimiter.redis("redis://127.0.0.1:1/0")
    app, _, _ = build_test_apps(uow_source, rate_limiter=limiter, config=EdgeConfig(env="test"))
    async with asgi_client(app) as client:
        response = await client.get("/api/v1/meta/time")
    assert response.status_code == 200


async def test_the_docs_ui_is_served_from_the_package_without_a_cdn(uow_source: ConnectionSource) -> None:
    _, admin, _ = build_test_apps(uow_source)
    async with asgi_client(admin) as client:
        page = await client.get("/docs")
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        init = await client.get("/docs/init.js")
    assert page.status_code == 200
    assert "https://" not in page.text
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.text
    assert "/docs/openapi.json" in init.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"].split("style-src")[0]


async def test_the_docs_are_off_unless_enabled(uow_source: ConnectionSource) -> None:
    _, admin, _ = build_test_apps(uow_source, config=EdgeConfig(env="prod", docs=False, rate_limit_enabled=False))
    async with asgi_client(admin) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/docs/assets/swagger-ui-bundle.js")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("query", ["q=%00", "q=a%00b", "q=%ff%fe", "q=%01"])
async def test_unreadable_text_in_the_query_is_400(uow_source: ConnectionSource, query: str) -> None:
    app, _, _ = build_test_apps(uow_source)
    async with asgi_client(app) as client:
        response = await client.get("/api/v1/meta/time?" + query)
    assert response.status_code == 400
    assert response.json()["code"] == "request.bad_text"


async def test_text_the_database_refuses_in_a_body_is_400_not_500(committed_source: ConnectionSource) -> None:
    from persistence.uow import SqlUnitOfWork, UnstorableTextError

    async def write() -> None:
        async with SqlUnitOfWork(committed_source) as uow:
            await uow.outbox.add("test.nul", {"text": "a"}, now=datetime.now(UTC), key="bad\x00key")

    with pytest.raises(UnstorableTextError) as caught:
        await write()
    assert caught.value.status == 400
