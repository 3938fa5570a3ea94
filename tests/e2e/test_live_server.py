"""``bff serve`` with HSP_ENV=test on PostgreSQL and Redis, and ``bff demo`` on SQLite, as subprocesses
over real HTTP; schemathesis over the committed OpenAPI finds no 5xx."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support.live import ROOT, LiveServer

OPENAPI = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
ADMIN_PATHS = ("/healthz", "/readyz", "/metrics", "/api/v1/admin")


def test_serve_answers_ready_with_every_check(live: LiveServer) -> None:
    ready = httpx.get(live.admin_url + "/readyz").json()
    assert ready["status"] == "ready"
    assert {c["name"] for c in ready["checks"]} == {"database", "migrations", "redis"}
    assert httpx.get(live.base_url + "/healthz").status_code == 404, "ops routes stay off the public listener"
    assert httpx.get(live.admin_url + "/docs").status_code == 200


def test_logs_are_json_lines_without_personal_data(live: LiveServer) -> None:
    httpx.get(live.base_url + "/api/v1/meta/time", headers={"X-Request-Id": "trace-11010519491231002X"})
    lines = [line for line in live.log_path.read_text().splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in lines]
    assert any(e.get("event") == "request" and e.get("route") == "/api/v1/meta/time" for e in events)
    assert "11010519491231002X" not in live.log_path.read_text()


def test_the_production_openapi_has_no_sandbox_paths() -> None:
    """D11: the committed document is the production app's; sandbox routes never appear in it."""
    assert OPENAPI["paths"], "the document lists routes"
    assert not [p for p in OPENAPI["paths"] if p.startswith("/sandbox")]
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                assert operation.get("operationId"), f"{method} {path} has an operation id"
                assert operation.get("tags"), f"{method} {path} has a tag"


schema = schemathesis.openapi.from_dict(OPENAPI)
VENDOR_ANSWERS = ("/callbacks/wechat-pay", "/callbacks/alipay")
"""Payment notifications are answered in each channel's own form (protocols §2.5, §3.5), not problem+json."""


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx(case: schemathesis.Case[Any], live: LiveServer) -> None:
    base = live.admin_url if case.path.startswith(ADMIN_PATHS) else live.base_url
    response = case.call(base_url=base, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400 and case.path not in VENDOR_ANSWERS:
        content_type = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
        assert content_type[0].startswith("application/problem+json"), content_type


def test_openapi_file_is_current() -> None:
    from bootstrap.cli import render_openapi

    assert (ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8") == render_openapi()
