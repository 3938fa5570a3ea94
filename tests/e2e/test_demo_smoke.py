"""``bff demo`` runs on SQLite with nothing else installed: migrate, serve, sandboxes, docs (DESIGN D11)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.live import run_bff


def test_the_demo_starts_on_sqlite_and_serves_docs_health_and_sandboxes(tmp_path: Path) -> None:
    with run_bff(["demo", "--data-dir", str(tmp_path / "data"), "--quiet"], {}, log_dir=tmp_path) as demo:
        ready = httpx.get(demo.admin_url + "/readyz").json()
        assert ready["status"] == "ready"
        assert {c["name"] for c in ready["checks"]} == {"database", "migrations"}

        docs = httpx.get(demo.admin_url + "/docs")
        assert docs.status_code == 200
        assert "/docs/openapi.json" in docs.text
        spec = httpx.get(demo.admin_url + "/docs/openapi.json").json()
        assert "/api/v1/meta/time" in spec["paths"]

        before = httpx.get(demo.base_url + "/api/v1/meta/time").json()["now"]
        moved = httpx.post(demo.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 86400})
        assert moved.status_code in (200, 201)
        after = httpx.get(demo.base_url + "/api/v1/meta/time").json()["now"]
        assert after[:10] > before[:10], "the demo clock moved a day forward for the app too"

        echo = httpx.post(demo.base_url + "/sandbox/echo/echo", json={"hello": "世界"})
        assert echo.status_code in (200, 201)

        log = demo.log_path.read_text()
        assert "HSP BFF demo is running" in log
        assert "/docs" in log
    assert (tmp_path / "data" / "hsp.db").is_file()
