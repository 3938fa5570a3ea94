"""The catalogue synced from the sandbox HIS over FHIR, browsed by residents, changed by pushes, and still
readable when a hospital's HIS is switched off (issue: HIS layer)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.live import LiveServer, operator_token

client = httpx.Client(headers={"X-Forwarded-For": "198.51.100.88"}, timeout=30)
CAT = "/api/v1/patient/catalogue"


def wait_for(predicate: Any, *, seconds: float = 45.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def synced(live: LiveServer, code: str) -> bool:
    response = client.get(live.base_url + f"{CAT}/hospitals/{code}/departments")
    return response.status_code == 200 and bool(response.json()["items"])


def test_residents_browse_hospitals_departments_doctors_and_remaining_numbers(live: LiveServer) -> None:
    assert wait_for(lambda: all(synced(live, c) for c in ("H001", "H002", "H003"))), "the initial sync ran"
    hospitals = client.get(live.base_url + f"{CAT}/hospitals").json()["items"]
    assert {h["code"]: h["level"] for h in hospitals} == {"H001": "tertiary", "H002": "secondary", "H003": "primary"}
    departments = client.get(live.base_url + f"{CAT}/hospitals/H001/departments").json()["items"]
    assert len(departments) >= 10
    doctors: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"hospital": "H001", "limit": 50}
        if cursor:
            params["cursor"] = cursor
        page = client.get(live.base_url + f"{CAT}/doctors", params=params).json()
        doctors += page["items"]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    assert len(doctors) >= 30
    working = next(d for d in doctors if not d["onLeave"])
    sessions = client.get(live.base_url + f"{CAT}/hospitals/H001/doctors/{working['code']}/sessions").json()["items"]
    assert sessions, "the doctor has sessions in the next 14 days"
    for session in sessions:
        assert session["remaining"] == (
            sum(s["remaining"] for s in session["slots"]) if session["status"] == "open" else 0
        )
    specialty = working["specialties"][0] if working["specialties"] else working["name"]
    found = client.get(live.base_url + f"{CAT}/doctors", params={"q": specialty}).json()["items"]
    assert any(d["code"] == working["code"] for d in found)


def test_a_session_stopped_at_the_his_shows_up_after_its_push(live: LiveServer) -> None:
    assert wait_for(lambda: synced(live, "H002"))
    doctors = client.get(live.base_url + f"{CAT}/doctors", params={"hospital": "H002", "limit": 50}).json()["items"]
    target = None
    for doctor in doctors:
        items = client.get(live.base_url + f"{CAT}/hospitals/H002/doctors/{doctor['code']}/sessions").json()["items"]
        target = next((s for s in items if s["status"] == "open"), None)
        if target:
            break
    assert target is not None
    stopped = client.post(
        live.base_url + f"/sandbox/his/test/H002/sessions/{target['sessionId']}/stop", json={"reason": "医生临时外出"}
    )
    assert stopped.status_code in (200, 201), stopped.text
    client.post(live.base_url + "/sandbox/admin/clock", json={"advanceSeconds": 0})  # deliver the push

    def is_stopped() -> bool:
        items = client.get(live.base_url + f"{CAT}/hospitals/H002/doctors/{target['doctorCode']}/sessions").json()[
            "items"
        ]
        return any(s["sessionId"] == target["sessionId"] and s["status"] == "stopped" for s in items)

    assert wait_for(is_stopped, seconds=20), "the push refreshed the session"


def test_a_hospital_switched_off_stays_readable_and_its_writes_answer_503(live: LiveServer) -> None:
    assert wait_for(lambda: synced(live, "H003"))
    token = operator_token(live, "op.catalogue", client)
    off = client.put(live.base_url + "/sandbox/his/test/H003/online", json={"online": False})
    assert off.status_code in (200, 201)
    try:
        readable = client.get(live.base_url + f"{CAT}/hospitals/H003/departments")
        sync = client.post(
            live.admin_url + "/api/v1/admin/hospitals/H003/sync", headers={"Authorization": f"Bearer {token}"}
        )
        health = client.get(live.admin_url + "/api/v1/admin/his/health", headers={"Authorization": f"Bearer {token}"})
    finally:
        client.put(live.base_url + "/sandbox/his/test/H003/online", json={"online": True})
    assert readable.status_code == 200
    assert readable.json()["items"]
    assert sync.status_code == 503, sync.text
    assert sync.json()["code"].startswith("his.")
    assert sync.json()["message"]
    assert health.status_code == 200
