"""The sandbox HIS over real HTTP on loopback: seeded catalogue, FHIR searches and paging, registration flows,
patients, the hospital switch, signed rest-hook pushes and fault injection (docs/his-fhir-profile.md)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath

from domain.catalogue.push import verify_push
from domain.kernel.clock import SHANGHAI
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.his import HisSimulator
from tests.support.clock import ManualClock

START = datetime(2025, 3, 2, 23, 0, tzinfo=UTC)
"""Monday 2025-03-03, 07:00 in China."""
TODAY = date(2025, 3, 3)
LAST_DAY = TODAY + timedelta(days=13)
SECRETS = {"H001": "h001-push-secret", "H002": "h002-push-secret", "H003": "h003-push-secret"}
FHIR_JSON = "application/fhir+json"
RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"
CHINESE_NAME = re.compile(r"^[\u4e00-\u9fff]{2,3}$")


def ext(resource: dict[str, Any], name: str) -> Any:
    for item in resource.get("extension", []):
        if item["url"] == name:
            return next(v for k, v in item.items() if k.startswith("value"))
    return None


def local(instant: str) -> datetime:
    return datetime.fromisoformat(instant).astimezone(SHANGHAI)


@dataclass
class Pushes:
    """The platform's side of the rest-hook: every push received, raw."""

    url: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def bundles(self, hospital_code: str) -> list[dict[str, Any]]:
        return [json.loads(body) for code, _, body in self.received if code == hospital_code]


def receiver_app(pushes: Pushes) -> Litestar:
    @post("/callbacks/his/{hospital_code:str}", status_code=200)
    async def hook(hospital_code: FromPath[str], request: Request[Any, Any, Any]) -> Response[str]:
        pushes.received.append((hospital_code, dict(request.headers), await request.body()))
        return Response("ok", media_type="text/plain")

    return Litestar([hook])


@dataclass
class His:
    client: httpx.AsyncClient
    ctx: SandboxContext
    simulator: HisSimulator

    def now(self) -> datetime:
        return self.ctx.clock.now()

    async def get(self, code: str, path: str, **params: Any) -> dict[str, Any]:
        answer = await self.client.get(f"/sandbox/his/{code}/fhir/{path}", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(FHIR_JSON)
        body: dict[str, Any] = answer.json()
        return body

    async def search_all(self, code: str, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
        """Every entry of a search, following ``next`` links; also the total the first page announced."""
        bundle = await self.get(code, path, **params)
        total: int = bundle["total"]
        entries: list[dict[str, Any]] = list(bundle["entry"])
        while following := next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None):
            answer = await self.client.get(following)
            assert answer.status_code == 200, answer.text
            bundle = answer.json()
            assert bundle["total"] == total
            entries.extend(bundle["entry"])
        return entries, total

    async def send(
        self, method: str, code: str, path: str, resource: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.request(
            method,
            f"/sandbox/his/{code}/fhir/{path}",
            content=json.dumps(resource, ensure_ascii=False).encode(),
            headers={"Content-Type": FHIR_JSON, **(headers or {})},
        )

    async def advance(self, seconds: float) -> None:
        answer = await self.client.post("/sandbox/admin/clock", json={"advanceSeconds": seconds})
        assert answer.status_code == 200, answer.text

    async def sessions(self, code: str, day: date | None = None) -> list[dict[str, Any]]:
        params = {"day": day.isoformat()} if day else {}
        answer = await self.client.get(f"/sandbox/his/test/{code}/sessions", params=params)
        assert answer.status_code == 200, answer.text
        sessions: list[dict[str, Any]] = answer.json()["sessions"]
        return sessions

    async def stop(self, code: str, session_id: str, reason: str = "医生临时外出会诊") -> dict[str, Any]:
        answer = await self.client.post(f"/sandbox/his/test/{code}/sessions/{session_id}/stop", json={"reason": reason})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def set_capacity(self, code: str, slot_id: str, capacity: int) -> dict[str, Any]:
        answer = await self.client.post(
            f"/sandbox/his/test/{code}/slots/{slot_id}/capacity", json={"capacity": capacity}
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def slot(self, code: str, slot_id: str) -> dict[str, Any]:
        return await self.get(code, f"Slot/{slot_id}")

    async def open_slot(self, code: str, day: date, free: int = 1) -> tuple[str, str]:
        """(session id, slot id) of a doctor's open session on ``day`` with ``free`` platform numbers left."""
        for session in await self.sessions(code, day):
            if not session["active"] or session["doctorCode"] is None:
                continue
            for slot in session["slots"]:
                if slot["capacity"] - slot["booked"] >= free and datetime.fromisoformat(slot["start"]) > self.now():
                    return session["id"], slot["id"]
        raise AssertionError(f"no open slot on {day}")

    async def patient(self, code: str, id_number: str, name: str = "张伟") -> str:
        answer = await self.send(
            "POST",
            code,
            "Patient",
            {
                "resourceType": "Patient",
                "identifier": [{"system": RESIDENT_ID, "value": id_number}],
                "name": [{"text": name}],
                "gender": "male",
                "birthDate": "1990-03-07",
            },
            {"If-None-Exist": f"identifier={RESIDENT_ID}|{id_number}"},
        )
        assert answer.status_code in (200, 201), answer.text
        return patid_of(answer.json())

    async def appointment(
        self, code: str, slot_id: str, patid: str, *, status: str = "proposed", key: str | None = None
    ) -> httpx.Response:
        resource: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": status,
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [{"actor": {"reference": f"Patient/{patid}"}, "status": "accepted"}],
        }
        if key is not None:
            resource["identifier"] = [{"system": "urn:hsp:request-key", "value": key}]
        return await self.send("POST", code, "Appointment", resource)

    async def move(self, code: str, appointment_id: str, status: str, **extra: Any) -> httpx.Response:
        resource = {"resourceType": "Appointment", "id": appointment_id, "status": status, **extra}
        return await self.send("PUT", code, f"Appointment/{appointment_id}", resource)


def patid_of(patient: dict[str, Any]) -> str:
    return next(str(i["value"]) for i in patient["identifier"] if i["system"] == "urn:hsp:patid")


@pytest.fixture(scope="module")
async def push_receiver() -> AsyncIterator[Pushes]:
    pushes = Pushes()
    async with run_standalone(receiver_app(pushes)) as url:
        pushes.url = url
        yield pushes


@pytest.fixture
def pushes(push_receiver: Pushes) -> Pushes:
    push_receiver.received.clear()
    return push_receiver


@pytest.fixture
async def his(pushes: Pushes) -> AsyncIterator[His]:
    ctx = SandboxContext(ManualClock(START))
    simulator = HisSimulator(subscription_secrets=SECRETS, callback_base_url=pushes.url)
    app = build_sandbox_app([simulator], ctx, pump_interval=None)
    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as client,
    ):
        yield His(client=client, ctx=ctx, simulator=simulator)


# --- the seeded catalogue ----------------------------------------------------------------------------------


async def test_three_hospitals_of_different_levels(his: His) -> None:
    levels = {}
    for code in ("H001", "H002", "H003"):
        bundle = await his.get(code, "Organization", identifier=f"urn:hsp:hospital|{code}")
        (entry,) = bundle["entry"]
        organization = entry["resource"]
        assert organization["identifier"] == [{"system": "urn:hsp:hospital", "value": code}]
        assert re.search(r"[\u4e00-\u9fff]", organization["name"])
        assert organization["address"][0]["text"]
        assert organization["telecom"][0]["value"]
        levels[code] = ext(organization, "level")
        other = await his.get(code, "Organization", identifier="urn:hsp:hospital|H999")
        assert other["total"] == 0
    assert levels == {"H001": "tertiary", "H002": "secondary", "H003": "primary"}
    tertiary = (await his.get("H001", "Organization"))["entry"][0]["resource"]
    assert "三级甲等" in tertiary["type"][0]["text"]


async def test_departments_and_doctors(his: His) -> None:
    departments: dict[str, dict[str, Any]] = {}
    roles: list[dict[str, Any]] = []
    practitioners: dict[str, dict[str, Any]] = {}
    for code in ("H001", "H002", "H003"):
        entries, total = await his.search_all(code, "HealthcareService", _count=50)
        assert len(entries) == total
        for entry in entries:
            departments[f"{code}/{entry['resource']['id']}"] = entry["resource"]
        entries, total = await his.search_all(
            code, "PractitionerRole", _include="PractitionerRole:practitioner", _count=50
        )
        matched = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
        assert len(matched) == total
        roles.extend(matched)
        practitioners.update({e["resource"]["id"]: e["resource"] for e in entries if e["search"]["mode"] == "include"})

    assert len(departments) >= 15
    names = {d["name"] for d in departments.values()}
    assert {"内科", "外科", "儿科", "妇产科", "眼科", "耳鼻喉科", "口腔科", "皮肤科", "中医科"} <= names
    assert {"心血管内科", "消化内科", "呼吸内科", "神经内科", "骨科", "全科"} <= names
    for key, department in departments.items():
        assert department["identifier"][0]["system"] == "urn:hsp:department"
        assert department["comment"]
        parent = ext(department, "parent")
        assert parent is None or f"{key.split('/')[0]}/{parent}" in departments

    assert len(roles) >= 60
    assert set(practitioners) == {r["practitioner"]["reference"].removeprefix("Practitioner/") for r in roles}
    titles = Counter(r["code"][0]["coding"][0]["code"] for r in roles)
    assert set(titles) <= {"chief", "associate_chief", "attending", "resident"}
    assert titles["chief"] + titles["associate_chief"] < titles["attending"] + titles["resident"]
    for role in roles:
        practitioner = practitioners[role["practitioner"]["reference"].removeprefix("Practitioner/")]
        assert CHINESE_NAME.match(practitioner["name"][0]["text"]), practitioner["name"]
        assert practitioner["identifier"][0]["system"] == "urn:hsp:practitioner"
        assert role["specialty"]
        assert all(s["text"] for s in role["specialty"])
        assert ext(role, "introduction")
        assert role["healthcareService"]
    assert 2 <= sum(not r["active"] for r in roles) <= 6
    all_specialties = {s["text"] for r in roles for s in r["specialty"]}
    assert {"高血压", "糖尿病"} & all_specialties


async def test_schedules_cover_fourteen_days_in_thirty_minute_slots(his: His) -> None:
    days: set[date] = set()
    schedules: list[dict[str, Any]] = []
    for code in ("H001", "H002", "H003"):
        entries, _ = await his.search_all(code, "Schedule", date=[f"ge{TODAY}", f"le{LAST_DAY}"], _count=200)
        schedules.extend(e["resource"] for e in entries)
    for schedule in schedules:
        start = local(schedule["planningHorizon"]["start"])
        end = local(schedule["planningHorizon"]["end"])
        days.add(start.date())
        period = ext(schedule, "period")
        assert (period, start.time().isoformat(), end.time().isoformat()) in {
            ("morning", "08:00:00", "12:00:00"),
            ("afternoon", "14:00:00", "17:30:00"),
        }
        fee = ext(schedule, "fee")
        assert fee["currency"] == "CNY"
        assert fee["value"] in (10.0, 20.0, 30.0, 50.0)
        assert schedule["meta"]["versionId"] == "1"
        assert schedule["actor"][0]["reference"].startswith("HealthcareService/")
    assert days == {TODAY + timedelta(days=n) for n in range(14)}
    assert len(schedules) >= 14 * 10

    stopped = [s for s in schedules if not s["active"]]
    assert stopped
    assert all(ext(s, "stop-reason") for s in stopped)
    assert any(ext(s, "stop-reason") == "医生休假" for s in stopped), "a doctor on leave with stopped sessions"

    for code in ("H001", "H003"):
        entries, _ = await his.search_all(code, "Schedule", date=f"eq{TODAY + timedelta(days=1)}", _count=5)
        for entry in entries[:6]:
            schedule = entry["resource"]
            slots, total = await his.search_all(code, "Slot", schedule=schedule["id"], _count=3)
            assert len(slots) == total >= 7
            moments = [(local(s["resource"]["start"]), local(s["resource"]["end"])) for s in slots]
            assert moments[0][0] == local(schedule["planningHorizon"]["start"])
            assert moments[-1][1] == local(schedule["planningHorizon"]["end"])
            for (start, end), (following, _) in zip(moments, [*moments[1:], (moments[-1][1], None)], strict=True):
                assert end - start == timedelta(minutes=30)
                assert following == end
            for slot in slots:
                resource = slot["resource"]
                assert ext(resource, "platform-capacity") >= 1
                assert 0 <= ext(resource, "platform-booked") <= ext(resource, "platform-capacity")
                assert resource["status"] in ("free", "busy", "busy-unavailable")


async def test_on_site_quotas_full_and_stopped_sessions(his: His) -> None:
    sessions = [s for code in ("H001", "H002", "H003") for s in await his.sessions(code)]
    slots = [slot for s in sessions for slot in s["slots"]]
    assert all(slot["onsite"] >= 1 and slot["capacity"] >= 1 for slot in slots), "APT-001: an on-site quota"
    assert all(
        datetime.fromisoformat(slot["end"]) - datetime.fromisoformat(slot["start"]) == timedelta(minutes=30)
        for slot in slots
    )
    full = [s for s in sessions if s["active"] and all(x["booked"] == x["capacity"] for x in s["slots"])]
    stopped = [s for s in sessions if not s["active"]]
    assert len(full) >= 5
    assert len(stopped) >= 5
    assert any(0 < sum(x["booked"] for x in s["slots"]) < sum(x["capacity"] for x in s["slots"]) for s in sessions)


async def test_the_same_seed_gives_the_same_data(his: His) -> None:
    async def snapshot() -> tuple[bytes, bytes]:
        roles = await his.client.get("/sandbox/his/H002/fhir/PractitionerRole", params={"_count": 100})
        schedules = await his.client.get(
            "/sandbox/his/H002/fhir/Schedule", params={"date": f"le{LAST_DAY}", "_count": 1000}
        )
        return roles.content, schedules.content

    async def reseed(seed: int) -> None:
        answer = await his.client.post("/sandbox/admin/his/seed", json={"seed": seed})
        assert answer.status_code == 200, answer.text

    first = await snapshot()
    await his.stop("H002", json.loads(first[1])["entry"][0]["resource"]["id"])
    assert await snapshot() != first
    await reseed(0)
    assert await snapshot() == first
    await reseed(1)
    other = await snapshot()
    assert other[0] != first[0]
    await reseed(1)
    assert await snapshot() == other

    twin = HisSimulator()
    SandboxContext(ManualClock(START)).register(twin)
    await reseed(0)
    ours = his.simulator.hospitals["H001"]
    theirs = twin.hospitals["H001"]
    assert [d.name for d in ours.directory.doctors] == [d.name for d in theirs.directory.doctors]
    assert [(s.id, [(x.capacity, x.booked) for x in s.slots]) for s in ours.sessions.values()] == [
        (s.id, [(x.capacity, x.booked) for x in s.slots]) for s in theirs.sessions.values()
    ]


# --- searching ---------------------------------------------------------------------------------------------


async def test_paging_follows_next_links(his: His) -> None:
    everything = await his.get("H001", "Schedule", date=[f"ge{TODAY}", f"le{LAST_DAY}"], _count=1000)
    assert "next" not in {link["relation"] for link in everything["link"]}
    expected = [e["resource"]["id"] for e in everything["entry"]]
    assert len(expected) == everything["total"] > 100

    paged, total = await his.search_all("H001", "Schedule", date=[f"ge{TODAY}", f"le{LAST_DAY}"], _count=37)
    assert total == len(expected)
    assert [e["resource"]["id"] for e in paged] == expected
    assert all(e["fullUrl"].endswith(f"/sandbox/his/H001/fhir/Schedule/{e['resource']['id']}") for e in paged)

    first = await his.get("H001", "Schedule", date=[f"ge{TODAY}", f"le{LAST_DAY}"], _count=37)
    assert len(first["entry"]) == 37
    (next_url,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert next_url.startswith("http://")
    assert "date=ge2025-03-03" in next_url

    roles, total = await his.search_all("H001", "PractitionerRole", _include="PractitionerRole:practitioner", _count=7)
    matched = [e for e in roles if e["search"]["mode"] == "match"]
    included = [e for e in roles if e["search"]["mode"] == "include"]
    assert len(matched) == total == len(included)

    one_day = await his.get("H001", "Schedule", date=f"{TODAY}", _count=1000)
    assert {local(e["resource"]["planningHorizon"]["start"]).date() for e in one_day["entry"]} == {TODAY}


async def test_last_updated_finds_only_what_changed(his: His) -> None:
    before = his.now()
    await his.advance(60)
    window = {"date": [f"ge{TODAY}", f"le{LAST_DAY}"], "_count": 1000}
    assert (await his.get("H001", "Schedule", _lastUpdated=f"gt{before.isoformat()}", **window))["total"] == 0

    first, second = [s["id"] for s in await his.sessions("H001", TODAY + timedelta(days=2)) if s["active"]][:2]
    await his.stop("H001", first, "医生参加学术会议")
    stopped = await his.send(
        "POST",
        "H001",
        f"Schedule/{second}/$stop",
        {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "医生身体不适"}]},
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["active"] is False
    assert ext(stopped.json(), "stop-reason") == "医生身体不适"

    changed = await his.get("H001", "Schedule", _lastUpdated=f"gt{before.isoformat()}", **window)
    assert sorted(e["resource"]["id"] for e in changed["entry"]) == sorted([first, second])
    for entry in changed["entry"]:
        assert entry["resource"]["meta"]["versionId"] == "2"
        assert datetime.fromisoformat(entry["resource"]["meta"]["lastUpdated"]) == START + timedelta(seconds=60)
        assert entry["resource"]["active"] is False
    # An unencoded "+" of the offset reaches the server as a space: still understood.
    raw = await his.client.get(
        f"/sandbox/his/H001/fhir/Schedule?_lastUpdated=gt{before.astimezone(SHANGHAI).isoformat()}&_count=1000"
    )
    assert raw.json()["total"] == 2
    assert (await his.get("H001", "Schedule", _lastUpdated=f"gt{his.now().isoformat()}"))["total"] == 0

    slots, _ = await his.search_all("H001", "Slot", schedule=f"Schedule/{first}")
    assert {s["resource"]["status"] for s in slots} == {"busy-unavailable"}
    assert {s["resource"]["meta"]["versionId"] for s in slots} == {"2"}


# --- registration ------------------------------------------------------------------------------------------


async def test_lock_confirm_and_cancel_take_and_give_back_numbers(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    _, slot_id = await his.open_slot("H001", TODAY + timedelta(days=1), free=2)
    booked_before = ext(await his.slot("H001", slot_id), "platform-booked")
    version_before = (await his.slot("H001", slot_id))["meta"]["versionId"]

    locked = await his.appointment("H001", slot_id, patid, key="lock-1")
    assert locked.status_code == 201, locked.text
    lock = locked.json()
    assert lock["status"] == "proposed"
    assert datetime.fromisoformat(ext(lock, "lock-expires")) == his.now() + timedelta(minutes=10)
    assert lock["identifier"] == [{"system": "urn:hsp:request-key", "value": "lock-1"}]
    assert locked.headers["location"].endswith(f"/Appointment/{lock['id']}")
    slot = await his.slot("H001", slot_id)
    assert ext(slot, "platform-booked") == booked_before + 1
    assert slot["meta"]["versionId"] != version_before

    confirmed = await his.move("H001", lock["id"], "booked")
    assert confirmed.status_code == 200, confirmed.text
    registration = confirmed.json()
    assert registration["status"] == "booked"
    assert ext(registration, "lock-expires") is None
    queue_number = ext(registration, "queue-number")
    assert isinstance(queue_number, int)
    assert queue_number > 0
    assert ext(await his.slot("H001", slot_id), "platform-booked") == booked_before + 1

    read = await his.client.get(f"/sandbox/his/H001/fhir/Appointment/{lock['id']}")
    assert read.status_code == 200
    assert ext(read.json(), "queue-number") == queue_number
    assert ext(read.json(), "queue-ahead") == 0

    duplicate = await his.appointment("H001", slot_id, patid, status="booked", key="again")
    assert duplicate.status_code == 422
    assert duplicate.json()["issue"][0]["code"] == "business-rule"

    cancelled = await his.move("H001", lock["id"], "cancelled", cancelationReason={"text": "患者行程有变"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelationReason"] == {"text": "患者行程有变"}
    assert ext(await his.slot("H001", slot_id), "platform-booked") == booked_before
    again = await his.move("H001", lock["id"], "cancelled")
    assert again.status_code == 200, "a retried cancel changes nothing"
    assert ext(await his.slot("H001", slot_id), "platform-booked") == booked_before
    reopened = await his.move("H001", lock["id"], "booked")
    assert reopened.status_code == 422

    direct = await his.appointment("H001", slot_id, patid, status="booked", key="book-1")
    assert direct.status_code == 201, direct.text
    assert ext(direct.json(), "queue-number") == queue_number, "a cancelled number is given out again"
    assert ext(await his.slot("H001", slot_id), "platform-booked") == booked_before + 1


async def test_registration_uses_the_patients_own_lock(his: His) -> None:
    patid = await his.patient("H002", "110101199003071234")
    _, slot_id = await his.open_slot("H002", TODAY + timedelta(days=2))
    booked_before = ext(await his.slot("H002", slot_id), "platform-booked")
    lock = (await his.appointment("H002", slot_id, patid, key="k-lock")).json()
    booked = await his.appointment("H002", slot_id, patid, status="booked", key="k-book")
    assert booked.status_code == 201, booked.text
    assert ext(await his.slot("H002", slot_id), "platform-booked") == booked_before + 1
    old = (await his.client.get(f"/sandbox/his/H002/fhir/Appointment/{lock['id']}")).json()
    assert old["status"] == "cancelled"


async def test_a_repeated_create_with_the_same_key_returns_the_first(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    _, slot_id = await his.open_slot("H001", TODAY + timedelta(days=3))
    booked_before = ext(await his.slot("H001", slot_id), "platform-booked")
    first = await his.appointment("H001", slot_id, patid, status="booked", key="same-key")
    second = await his.appointment("H001", slot_id, patid, status="booked", key="same-key")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert ext(second.json(), "queue-number") == ext(first.json(), "queue-number")
    assert ext(await his.slot("H001", slot_id), "platform-booked") == booked_before + 1
    found = await his.get("H001", "Appointment", identifier="urn:hsp:request-key|same-key")
    assert [e["resource"]["id"] for e in found["entry"]] == [first.json()["id"]]


async def test_no_number_left_is_a_conflict(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    other = await his.patient("H001", "110101198506150021", "李娜")
    _, slot_id = await his.open_slot("H001", TODAY + timedelta(days=4))
    booked = ext(await his.slot("H001", slot_id), "platform-booked")
    changed = await his.set_capacity("H001", slot_id, booked + 1)
    assert changed["slot"]["capacity"] == booked + 1

    assert (await his.appointment("H001", slot_id, patid, key="a")).status_code == 201
    full = await his.appointment("H001", slot_id, other, key="b")
    assert full.status_code == 409
    assert full.headers["content-type"].startswith(FHIR_JSON)
    outcome = full.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "conflict"
    assert (await his.slot("H001", slot_id))["status"] == "busy"

    seeded_full = next(
        slot["id"]
        for session in await his.sessions("H001", TODAY + timedelta(days=1))
        if session["active"]
        for slot in session["slots"]
        if slot["booked"] >= slot["capacity"]
    )
    assert (await his.appointment("H001", seeded_full, other, key="c")).status_code == 409


async def test_a_stopped_session_is_a_business_rule_refusal(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    session_id, slot_id = await his.open_slot("H001", TODAY + timedelta(days=5), free=1)
    lock = (await his.appointment("H001", slot_id, patid, key="before-stop")).json()
    await his.stop("H001", session_id)

    refused = await his.appointment("H001", slot_id, patid, status="booked", key="after-stop")
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["code"] == "business-rule"
    confirm = await his.move("H001", lock["id"], "booked")
    assert confirm.status_code == 422
    assert (await his.move("H001", lock["id"], "cancelled")).status_code == 200


async def test_an_expired_lock_gives_its_number_back(his: His) -> None:
    patid = await his.patient("H003", "110101199003071234")
    _, slot_id = await his.open_slot("H003", TODAY + timedelta(days=1))
    booked_before = ext(await his.slot("H003", slot_id), "platform-booked")
    lock = (await his.appointment("H003", slot_id, patid, key="short-lived")).json()

    await his.advance(9 * 60)
    assert ext(await his.slot("H003", slot_id), "platform-booked") == booked_before + 1
    await his.advance(61)
    assert ext(await his.slot("H003", slot_id), "platform-booked") == booked_before
    expired = (await his.client.get(f"/sandbox/his/H003/fhir/Appointment/{lock['id']}")).json()
    assert expired["status"] == "cancelled"
    late = await his.move("H003", lock["id"], "booked")
    assert late.status_code == 409
    assert late.json()["issue"][0]["code"] == "conflict"


async def test_check_in_reports_the_queue(his: His) -> None:
    first = await his.patient("H001", "110101199003071234")
    second = await his.patient("H001", "110101198506150021", "李娜")
    _, slot_id = await his.open_slot("H001", TODAY, free=1)
    booked = ext(await his.slot("H001", slot_id), "platform-booked")
    await his.set_capacity("H001", slot_id, booked + 2)
    one = (await his.appointment("H001", slot_id, first, status="booked", key="q1")).json()
    two = (await his.appointment("H001", slot_id, second, status="booked", key="q2")).json()
    assert ext(two, "queue-number") == ext(one, "queue-number") + 1

    arrived = await his.move("H001", one["id"], "arrived")
    assert arrived.status_code == 200, arrived.text
    assert ext(arrived.json(), "queue-ahead") == 0
    assert ext(arrived.json(), "queue-current") == ext(one, "queue-number")
    arrived = await his.move("H001", two["id"], "arrived")
    assert ext(arrived.json(), "queue-ahead") == 1
    done = await his.move("H001", one["id"], "fulfilled")
    assert done.status_code == 200
    queue = (await his.client.get(f"/sandbox/his/H001/fhir/Appointment/{two['id']}")).json()
    assert ext(queue, "queue-ahead") == 0
    assert ext(queue, "queue-current") == ext(two, "queue-number")

    _, tomorrow = await his.open_slot("H001", TODAY + timedelta(days=1))
    early = (await his.appointment("H001", tomorrow, first, status="booked", key="q3")).json()
    refused = await his.move("H001", early["id"], "arrived")
    assert refused.status_code == 422, "check-in only on the day"


# --- patients ----------------------------------------------------------------------------------------------


async def test_conditional_patient_create_returns_the_same_patid(his: His) -> None:
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": "110101199003071234"}],
        "name": [{"text": "张伟"}],
        "gender": "male",
        "birthDate": "1990-03-07",
        "telecom": [{"system": "phone", "value": "13800138000"}],
    }
    condition = {"If-None-Exist": f"identifier={RESIDENT_ID}|110101199003071234"}
    created = await his.send("POST", "H001", "Patient", resource, condition)
    assert created.status_code == 201, created.text
    patid = patid_of(created.json())
    again = await his.send("POST", "H001", "Patient", resource, condition)
    assert again.status_code == 200
    assert patid_of(again.json()) == patid
    assert {"system": RESIDENT_ID, "value": "110101199003071234"} in again.json()["identifier"]
    elsewhere = await his.send("POST", "H002", "Patient", resource, condition)
    assert elsewhere.status_code == 201, "each hospital keeps its own patients"

    other = await his.patient("H001", "110101198506150021", "李娜")
    assert other != patid
    read = await his.get("H001", f"Patient/{patid}")
    assert read["name"] == [{"text": "张伟"}]

    plain = await his.send("POST", "H001", "Patient", resource)
    assert plain.status_code == 201, "without a condition every create is a new patient"
    ambiguous = await his.send("POST", "H001", "Patient", resource, condition)
    assert ambiguous.status_code == 412
    assert ambiguous.json()["issue"][0]["code"] == "multiple-matches"


async def test_a_child_is_matched_on_the_guardian_name_and_birth_date(his: His) -> None:
    def child(name: str) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "name": [{"text": name}],
            "gender": "female",
            "birthDate": "2022-05-01",
            "contact": [
                {
                    "relationship": [{"text": "母亲"}],
                    "name": {"text": "王芳"},
                    "extension": [
                        {
                            "url": "guardian-identifier",
                            "valueIdentifier": {"system": RESIDENT_ID, "value": "110101199201011226"},
                        }
                    ],
                }
            ],
        }

    def condition(name: str) -> dict[str, str]:
        criteria = urlencode(
            {"guardian-identifier": f"{RESIDENT_ID}|110101199201011226", "name": name, "birthdate": "2022-05-01"}
        )
        return {"If-None-Exist": criteria}

    created = await his.send("POST", "H001", "Patient", child("李小雨"), condition("李小雨"))
    assert created.status_code == 201, created.text
    again = await his.send("POST", "H001", "Patient", child("李小雨"), condition("李小雨"))
    assert again.status_code == 200
    assert patid_of(again.json()) == patid_of(created.json())
    twin = await his.send("POST", "H001", "Patient", child("李小雪"), condition("李小雪"))
    assert twin.status_code == 201
    assert patid_of(twin.json()) != patid_of(created.json())


async def test_patients_are_searched_without_being_created(his: His) -> None:
    """``GET Patient?identifier=``, and for a child ``guardian-identifier`` + ``name`` + ``birthdate`` (the
    conditional create's criteria): a searchset of the matches; nothing is created."""
    patid = await his.patient("H001", "110101199003071234")
    await his.patient("H001", "110101198506150021", "李娜")
    found = await his.get("H001", "Patient", identifier=f"{RESIDENT_ID}|110101199003071234")
    assert (found["type"], found["total"]) == ("searchset", 1)
    assert [patid_of(e["resource"]) for e in found["entry"]] == [patid]
    assert found["entry"][0]["search"]["mode"] == "match"
    nobody = await his.get("H001", "Patient", identifier=f"{RESIDENT_ID}|110101197001010018")
    assert (nobody["total"], nobody.get("entry", [])) == (0, [])
    elsewhere = await his.get("H002", "Patient", identifier=f"{RESIDENT_ID}|110101199003071234")
    assert elsewhere["total"] == 0, "each hospital keeps its own patients"

    guardian = {"system": RESIDENT_ID, "value": "110101199201011226"}
    child = {
        "resourceType": "Patient",
        "name": [{"text": "李小雨"}],
        "birthDate": "2022-05-01",
        "contact": [{"extension": [{"url": "guardian-identifier", "valueIdentifier": guardian}]}],
    }
    created = await his.send("POST", "H001", "Patient", child)
    assert created.status_code == 201, created.text
    criteria = {"guardian-identifier": f"{RESIDENT_ID}|110101199201011226", "name": "李小雨", "birthdate": "2022-05-01"}
    by_guardian = await his.get("H001", "Patient", **criteria)
    assert [patid_of(e["resource"]) for e in by_guardian["entry"]] == [patid_of(created.json())]
    for other in ({"name": "李小雪"}, {"birthdate": "2022-05-02"}, {"guardian-identifier": f"{RESIDENT_ID}|x"}):
        assert (await his.get("H001", "Patient", **(criteria | other)))["total"] == 0, other
    assert len(his.simulator.hospital("H001").patients) == 3
    twice = await his.send("POST", "H001", "Patient", child)
    assert twice.status_code == 201, "a plain create records the child again"
    assert (await his.get("H001", "Patient", **criteria))["total"] == 2, "the search shows both"


# --- hospital switch, pushes, faults -----------------------------------------------------------------------


async def test_a_hospital_switched_off_answers_503(his: His) -> None:
    patid = await his.patient("H002", "110101199003071234")
    _, slot_id = await his.open_slot("H002", TODAY + timedelta(days=1))
    switched = await his.client.put("/sandbox/his/test/H002/online", json={"online": False})
    assert switched.json() == {"hospitalCode": "H002", "online": False}

    answers = [
        await his.client.get("/sandbox/his/H002/fhir/Organization"),
        await his.client.get("/sandbox/his/H002/fhir/Schedule", params={"date": f"ge{TODAY}"}),
        await his.client.get(f"/sandbox/his/H002/fhir/Slot/{slot_id}"),
        await his.appointment("H002", slot_id, patid, key="off"),
    ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith(FHIR_JSON)
        assert answer.json()["issue"][0]["code"] == "transient"
    assert (await his.client.get("/sandbox/his/H001/fhir/Organization")).status_code == 200
    assert await his.sessions("H002", TODAY), "the test helpers still answer"

    await his.client.put("/sandbox/his/test/H002/online", json={"online": True})
    assert (await his.appointment("H002", slot_id, patid, key="off")).status_code == 201


async def test_a_stop_pushes_a_signed_rest_hook(his: His, pushes: Pushes) -> None:
    session_id = (await his.sessions("H001", TODAY + timedelta(days=1)))[0]["id"]
    stopped = await his.stop("H001", session_id, "医生临时外出会诊")
    assert stopped["callbackId"]
    await his.advance(0)

    ((code, headers, body),) = pushes.received
    assert code == "H001"
    assert headers["content-type"] == FHIR_JSON
    assert verify_push(SECRETS["H001"], body, headers["x-hsp-signature"])
    assert not verify_push(SECRETS["H002"], body, headers["x-hsp-signature"])
    bundle = json.loads(body)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    resources = [e["resource"] for e in bundle["entry"]]
    schedule, *slots = resources
    assert schedule["resourceType"] == "Schedule"
    assert schedule["identifier"] == [{"system": "urn:hsp:session", "value": session_id}]
    assert schedule["active"] is False
    assert ext(schedule, "stop-reason") == "医生临时外出会诊"
    assert slots
    assert {s["resourceType"] for s in slots} == {"Slot"}
    assert {s["status"] for s in slots} == {"busy-unavailable"}

    again = await his.stop("H001", session_id)
    assert again["callbackId"] is None, "nothing changed, nothing pushed"

    slot_id = (await his.sessions("H003", TODAY + timedelta(days=2)))[0]["slots"][0]["id"]
    await his.set_capacity("H003", slot_id, 9)
    await his.advance(0)
    (capacity_push,) = pushes.bundles("H003")
    schedule, slot = (e["resource"] for e in capacity_push["entry"])
    assert slot["id"] == slot_id
    assert ext(slot, "platform-capacity") == 9
    assert schedule["meta"]["versionId"] == "2"
    _, headers, body = pushes.received[-1]
    assert verify_push(SECRETS["H003"], body, headers["x-hsp-signature"])

    via_fhir = (await his.sessions("H002", TODAY + timedelta(days=3)))[0]["id"]
    answer = await his.send("POST", "H002", f"Schedule/{via_fhir}/$stop", {"resourceType": "Parameters"})
    assert answer.status_code == 200
    await his.advance(0)
    assert [b["entry"][0]["resource"]["id"] for b in pushes.bundles("H002")] == [via_fhir]


async def test_pushes_are_retried_until_acknowledged(his: His, pushes: Pushes) -> None:
    his.simulator.callback_base_url = pushes.url + "/nowhere"
    session_id = (await his.sessions("H001", TODAY + timedelta(days=1)))[0]["id"]
    await his.stop("H001", session_id)
    await his.advance(0)
    await his.advance(10)
    outcomes = await his.client.get("/sandbox/admin/his/requests", params={"stream": "callbacks"})
    attempts = outcomes.json()["entries"]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [(1, 404, "retrying"), (2, 404, "retrying")]


async def test_inbound_faults_can_target_one_hospital(his: His) -> None:
    plan = {"inbound": {"pathPrefix": "/H002/", "errorRate": 1.0, "errorStatus": 503}}
    assert (await his.client.put("/sandbox/admin/his/faults", json=plan)).status_code == 200
    assert (await his.client.get("/sandbox/his/H002/fhir/Organization")).status_code == 503
    assert (await his.client.get("/sandbox/his/H001/fhir/Organization")).status_code == 200
    assert (await his.client.get("/sandbox/his/H003/fhir/Organization")).status_code == 200

    plan = {"inbound": {"pathPrefix": "/H003/", "latencyMs": 250}}
    assert (await his.client.put("/sandbox/admin/his/faults", json=plan)).status_code == 200
    started = time.perf_counter()
    assert (await his.client.get("/sandbox/his/H003/fhir/Organization")).status_code == 200
    assert time.perf_counter() - started >= 0.25
    started = time.perf_counter()
    assert (await his.client.get("/sandbox/his/H002/fhir/Organization")).status_code == 200
    assert time.perf_counter() - started < 0.25

    records = (await his.client.get("/sandbox/admin/his/requests")).json()["entries"]
    assert [(r["path"], r["faults"]) for r in records[-2:]] == [
        ("/H003/fhir/Organization", ["latency"]),
        ("/H002/fhir/Organization", []),
    ]


async def test_unknown_things_are_404_operation_outcomes(his: His) -> None:
    for path in (
        "/sandbox/his/H999/fhir/Organization",
        "/sandbox/his/H001/fhir/Schedule/S19990101-P0000-AM",
        "/sandbox/his/H001/fhir/Appointment/A100000000",
        "/sandbox/his/H001/fhir/Encounter",
    ):
        answer = await his.client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["resourceType"] == "OperationOutcome"
    patid = await his.patient("H001", "110101199003071234")
    unknown_slot = await his.appointment("H001", "nope", patid)
    assert unknown_slot.status_code == 404
    bad = await his.send("POST", "H001", "Appointment", {"resourceType": "Patient"})
    assert bad.status_code == 400


async def test_the_schedule_horizon_moves_with_the_shared_clock(his: His) -> None:
    later = LAST_DAY + timedelta(days=1)
    assert (await his.get("H001", "Schedule", date=f"{later}"))["total"] == 0
    await his.advance(24 * 3600)
    fresh = await his.get("H001", "Schedule", date=f"{later}", _lastUpdated=f"gt{START.isoformat()}")
    assert fresh["total"] > 0


# --- outpatient bills (诊间支付) ----------------------------------------------------------------------------


def _yuan(money: dict[str, Any]) -> Decimal:
    assert money["currency"] == "CNY"
    return Decimal(str(money["value"]))


async def _invoices(his: His, code: str, patid: str, **params: Any) -> list[dict[str, Any]]:
    entries, total = await his.search_all(code, "Invoice", subject=f"Patient/{patid}", **params)
    assert len(entries) == total
    return [e["resource"] for e in entries]


async def _add_bill(his: His, code: str, patid: str, *items: dict[str, Any]) -> dict[str, Any]:
    answer = await his.client.post(f"/sandbox/his/test/{code}/bills", json={"patid": patid, "items": list(items)})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _settle_parameters(amount: Any, key: str | None, patid: str | None = None) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "amount", "valueMoney": {"value": amount, "currency": "CNY"}},
        {"name": "paymentReference", "valueString": "4200001234202503031234567890"},
        {"name": "channel", "valueCode": "wechat"},
    ]
    if key is not None:
        parameters.append({"name": "requestKey", "valueIdentifier": {"system": "urn:hsp:request-key", "value": key}})
    if patid is not None:
        parameters.append({"name": "patient", "valueIdentifier": {"system": "urn:hsp:patid", "value": patid}})
    return {"resourceType": "Parameters", "parameter": parameters}


async def _settle(his: His, code: str, bill_id: str, amount: Any, key: str | None, **extra: Any) -> httpx.Response:
    return await his.send("POST", code, f"Invoice/{bill_id}/$settle", _settle_parameters(amount, key, **extra))


def _refusal(answer: httpx.Response) -> tuple[int, str, str | None]:
    issue = answer.json()["issue"][0]
    codings = issue.get("details", {}).get("coding", [])
    assert all(c["system"] == "urn:hsp:settlement-refusal" for c in codings)
    return answer.status_code, issue["code"], codings[0]["code"] if codings else None


async def test_new_patients_have_unpaid_outpatient_bills(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    invoices = await _invoices(his, "H001", patid, status="issued")
    assert 1 <= len(invoices) <= 2
    truth = (await his.client.get("/sandbox/his/test/H001/bills", params={"patid": patid})).json()["bills"]
    assert [b["id"] for b in truth] == [i["id"] for i in invoices]
    for invoice, record in zip(invoices, truth, strict=True):
        assert invoice["status"] == "issued"
        assert invoice["subject"] == {
            "reference": f"Patient/{patid}",
            "identifier": {"system": "urn:hsp:patid", "value": patid},
        }
        assert local(invoice["date"]) <= his.now()
        assert invoice["type"]["text"].startswith("门诊缴费：")
        assert CHINESE_NAME.match(invoice["participant"][0]["actor"]["display"])
        assert invoice["issuer"]["identifier"]["system"] == "urn:hsp:department"
        assert invoice["issuer"]["display"]
        lines = Decimal(0)
        for line in invoice["lineItem"]:
            systems = [c["system"] for c in line["chargeItemCodeableConcept"]["coding"]]
            assert systems == ["urn:hsp:charge-item", "urn:hsp:fee-category"]
            (component,) = line["priceComponent"]
            assert component["type"] == "base"
            assert component["factor"] >= 1
            lines += _yuan(component["amount"])
        assert _yuan(invoice["totalGross"]) == _yuan(invoice["totalNet"]) == lines
        assert lines * 100 == record["totalFen"]
    assert await _invoices(his, "H001", patid, status="balanced,cancelled") == []
    assert all(i["subject"]["reference"] == f"Patient/{patid}" for i in await _invoices(his, "H001", patid))
    others = await his.get("H001", "Invoice", subject="Patient/999999999")
    assert others["total"] == 0
    assert (await his.get("H001", f"Invoice/{invoices[0]['id']}"))["id"] == invoices[0]["id"]


async def test_settle_is_idempotent_by_request_key(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    bill = await _add_bill(
        his,
        "H001",
        patid,
        {"code": "XY0003", "quantity": 3},
        {"code": "CL0101", "name": "棉签", "unitPriceFen": 10, "category": "material"},
    )
    assert bill["totalFen"] == 3 * 3299 + 10
    assert bill["title"] == "门诊缴费：西药费 等2项"
    await his.advance(60)
    first = await _settle(his, "H001", bill["id"], 99.07, "settle-1", patid=patid)
    assert first.status_code == 200, first.text
    invoice = first.json()
    assert invoice["status"] == "balanced"
    (receipt,) = invoice["identifier"]
    assert receipt["system"] == "urn:hsp:receipt"
    assert local(ext(invoice, "settled-at")) == his.now()

    await his.advance(60)
    again = await _settle(his, "H001", bill["id"], 99.07, "settle-1", patid=patid)
    assert again.status_code == 200
    assert again.json() == invoice, "a repeat answers the first settlement, unchanged"
    assert _refusal(await _settle(his, "H001", bill["id"], 99.07, "settle-2")) == (409, "conflict", "already-settled")
    assert bill["id"] not in [i["id"] for i in await _invoices(his, "H001", patid, status="issued")]
    (settled,) = await _invoices(his, "H001", patid, status="balanced")
    assert settled["id"] == bill["id"]
    assert (await his.get("H001", "Invoice", identifier=f"urn:hsp:receipt|{receipt['value']}"))["total"] == 1
    record = (await his.client.get("/sandbox/his/test/H001/bills", params={"patid": patid})).json()["bills"]
    mine = next(b for b in record if b["id"] == bill["id"])
    assert (mine["status"], mine["receiptNo"], mine["paymentRef"], mine["channel"]) == (
        "balanced",
        receipt["value"],
        "4200001234202503031234567890",
        "wechat",
    )


async def test_settlements_that_are_refused_stay_refused(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    stranger = await his.patient("H001", "110101198506150021", "李娜")
    bill = await _add_bill(his, "H001", patid, {"code": "250102001"})  # 20.00 yuan
    assert _refusal(await _settle(his, "H001", bill["id"], 20.01, "k-amount")) == (
        422,
        "business-rule",
        "amount-mismatch",
    )
    assert _refusal(await _settle(his, "H001", bill["id"], 20, "k-amount")) == (422, "business-rule", "amount-mismatch")
    assert _refusal(await _settle(his, "H001", bill["id"], 20, "k-who", patid=stranger))[2] == "wrong-patient"
    assert _refusal(await _settle(his, "H001", "INV999999999", 20, "k-none")) == (404, "not-found", "unknown-bill")

    switch = await his.client.put("/sandbox/his/test/H001/billing", json={"refuseNext": 1})
    assert switch.json() == {"hospitalCode": "H001", "refuseNext": 1, "unavailable": False}
    assert _refusal(await _settle(his, "H001", bill["id"], 20, "k-refused")) == (422, "business-rule", "refused")
    assert _refusal(await _settle(his, "H001", bill["id"], 20, "k-refused"))[2] == "refused"  # final for its key
    assert (await his.get("H001", f"Invoice/{bill['id']}"))["status"] == "issued"
    settled = await _settle(his, "H001", bill["id"], 20.0, "k-good", patid=patid)
    assert settled.status_code == 200, "only the next settlement was refused"
    reused = await _settle(
        his, "H001", (await _add_bill(his, "H001", patid, {"code": "250104002"}))["id"], 10, "k-good"
    )
    assert _refusal(reused) == (422, "business-rule", "key-reused")

    for amount, key, problem in ((20, None, "requestKey"), (20.001, "k-x", "two decimals"), ("20", "k-y", "CNY")):
        bad = await _settle(his, "H001", bill["id"], amount, key)
        assert bad.status_code == 400, bad.text
        assert problem in bad.json()["issue"][0]["diagnostics"]


async def test_a_cancelled_bill_cannot_be_settled(his: His) -> None:
    patid = await his.patient("H002", "110101199003071234")
    bill = await _add_bill(his, "H002", patid, {"code": "120400006"}, {"code": "CL0001", "quantity": 2})
    cancel = await his.client.post(f"/sandbox/his/test/H002/bills/{bill['id']}/cancel", json={"reason": "医生撤销医嘱"})
    assert cancel.status_code == 200, cancel.text
    invoice = await his.get("H002", f"Invoice/{bill['id']}")
    assert (invoice["status"], invoice["cancelledReason"]) == ("cancelled", "医生撤销医嘱")
    assert bill["id"] not in [i["id"] for i in await _invoices(his, "H002", patid, status="issued")]
    assert _refusal(await _settle(his, "H002", bill["id"], 19, "k-1")) == (409, "conflict", "bill-cancelled")

    other = await _add_bill(his, "H002", patid, {"code": "250102001"})
    assert (await _settle(his, "H002", other["id"], 20, "k-2")).status_code == 200
    late = await his.client.post(f"/sandbox/his/test/H002/bills/{other['id']}/cancel", json={})
    assert late.status_code == 409, "a settled bill cannot be withdrawn"


async def test_billing_can_be_switched_off_alone(his: His) -> None:
    patid = await his.patient("H003", "110101199003071234")
    bill = await _add_bill(his, "H003", patid, {"code": "250102001"})
    switch = await his.client.put("/sandbox/his/test/H003/billing", json={"unavailable": True})
    assert switch.json()["unavailable"] is True
    for answer in (
        await his.client.get("/sandbox/his/H003/fhir/Invoice", params={"subject": f"Patient/{patid}"}),
        await his.client.get(f"/sandbox/his/H003/fhir/Invoice/{bill['id']}"),
        await _settle(his, "H003", bill["id"], 20, "k-1"),
    ):
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "30"
        assert answer.json()["issue"][0]["code"] == "transient"
    assert (await his.get("H003", "Organization"))["total"] == 1, "the rest of the HIS keeps working"
    await his.client.put("/sandbox/his/test/H003/billing", json={"unavailable": False})
    assert (await _settle(his, "H003", bill["id"], 20, "k-1")).status_code == 200, "the key was never used"


async def test_bill_helpers_refuse_what_they_cannot_issue(his: His) -> None:
    patid = await his.patient("H001", "110101199003071234")
    for body, status in (
        ({"patid": "999999999", "items": [{"code": "250102001"}]}, 404),
        ({"patid": patid, "items": []}, 400),
        ({"patid": patid, "items": [{"code": "NEW-1"}]}, 400),
        (
            {"patid": patid, "items": [{"code": "NEW-1", "name": "新项目", "unitPriceFen": 5, "category": "其他费"}]},
            400,
        ),
        ({"patid": patid, "items": [{"code": "250102001"}], "departmentCode": "D999"}, 404),
    ):
        answer = await his.client.post("/sandbox/his/test/H001/bills", json=body)
        assert answer.status_code == status, (body, answer.text)
    metadata = await his.get("H001", "metadata")
    assert {"name": "settle", "definition": "Invoice/$settle"} in metadata["rest"][0]["operation"]
