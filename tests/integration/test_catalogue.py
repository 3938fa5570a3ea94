"""The hospital registry, the catalogue sync and the catalogue routes on the real PostgreSQL (issue: HIS layer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from domain.account.model import AccountKind, Audience, Session, StaffRole
from domain.catalogue.model import Hospital, HospitalLevel, SessionStatus
from domain.catalogue.push import push_signature
from domain.catalogue.use_cases import CatalogueDeps, CatalogueService, NotYourSessionError
from domain.kernel.clock import SHANGHAI
from domain.kernel.ids import new_id
from persistence.db import ConnectionSource
from persistence.ephemeral.memory_store import InMemoryEphemeralStore
from persistence.kernel.tables import outbox
from persistence.uow import unit_of_work_factory
from tests.support.app import FixedClock, asgi_client, build_test_apps
from tests.support.catalogue import FakeGateway, FakeHis


@dataclass
class Catalogue:
    service: CatalogueService
    his: FakeHis
    clock: FixedClock
    operator: Session


def _staff(roles: set[str], account_id: str | None = None) -> Session:
    now = FixedClock().now()
    return Session(
        id=new_id(),
        account_id=account_id or new_id(),
        kind=AccountKind.STAFF,
        audience=Audience.STAFF_APP,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=1),
        idle_seconds=900,
        roles=frozenset(roles),
    )


@pytest.fixture
async def cat(committed_source: ConnectionSource) -> Catalogue:
    from integrations.crypto.keys import Keyring, generate_keyring_config
    from integrations.crypto.suite import build_suite

    cfg = generate_keyring_config()
    suite = build_suite("intl", Keyring.from_config(cfg["active_kid"], cfg["keys"], cfg["index_key"]))
    clock = FixedClock()
    his = FakeHis()
    his.seed(clock.now().astimezone(SHANGHAI).date() + timedelta(days=2))
    service = CatalogueService(
        CatalogueDeps(
            uow_factory=unit_of_work_factory(committed_source, cipher=suite.cipher),
            clock=clock,
            gateway=FakeGateway({"H001": his}),
            store=InMemoryEphemeralStore(),
        )
    )
    operator = _staff({StaffRole.OPERATOR.value})
    await service.add_hospital(
        Hospital(
            code="H001",
            name="楚雄州人民医院",
            level=HospitalLevel.TERTIARY,
            region_code="532301",
            callback_secret="push-secret",
        ),
        actor=operator,
    )
    return Catalogue(service=service, his=his, clock=clock, operator=operator)


async def _events(source: ConnectionSource, topic: str) -> list[dict[str, object]]:
    async with source.engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox.c.payload).where(outbox.c.topic == topic))).scalars().all()
    return [dict(r) for r in rows]


async def test_sync_copies_the_catalogue_and_running_it_twice_changes_nothing(cat: Catalogue) -> None:
    first = await cat.service.sync_hospital("H001", full=True)
    second = await cat.service.sync_hospital("H001", full=True)
    assert (first.departments, first.doctors, first.sessions_changed, first.slots_changed) == (2, 2, 2, 5)
    assert (second.departments, second.doctors, second.sessions_changed, second.slots_changed) == (0, 0, 0, 0)
    sessions = await cat.service.sessions("H001", doctor_code="P-1")
    assert [s.remaining for s in sessions] == [12]
    assert all(slot.end - slot.start <= timedelta(minutes=30) for s in sessions for slot in s.slots), "APT-001"


async def test_a_capacity_below_what_we_sold_is_not_applied_and_becomes_a_conflict(
    cat: Catalogue, committed_source: ConnectionSource
) -> None:
    await cat.service.sync_hospital("H001")
    async with committed_source.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE clinic_slots SET taken = 2 WHERE id = 'S-1-0'"))
    cat.his.set_capacity("SES-1", "S-1-0", 1)
    report = await cat.service.sync_hospital("H001")
    again = await cat.service.sync_hospital("H001")
    async with committed_source.engine.connect() as conn:
        capacity = await conn.scalar(sa.text("SELECT capacity FROM clinic_slots WHERE id = 'S-1-0'"))
    assert report.conflicts == 1
    assert again.conflicts == 0, "one open conflict per slot, not one per sync"
    assert capacity == 2, "never below what is already taken"
    conflicts = await cat.service.conflicts(open_only=True, after=None, limit=10)
    assert [(c.slot_id, c.his_capacity, c.our_taken) for c in conflicts] == [("S-1-0", 1, 2)]
    resolved = await cat.service.resolve_conflict(conflicts[0].id, resolution="与医院核对后保留", actor=cat.operator)
    assert resolved.resolved_at is not None
    assert await cat.service.conflicts(open_only=True, after=None, limit=10) == []


async def test_a_capacity_raise_is_applied(cat: Catalogue) -> None:
    await cat.service.sync_hospital("H001")
    cat.his.set_capacity("SES-1", "S-1-0", 6)
    report = await cat.service.sync_hospital("H001")
    assert report.slots_changed == 1
    sessions = await cat.service.sessions("H001", doctor_code="P-1")
    assert sessions[0].remaining == 15


async def test_a_session_stopped_at_the_his_becomes_a_domain_event_once(
    cat: Catalogue, committed_source: ConnectionSource
) -> None:
    await cat.service.sync_hospital("H001")
    await cat.his.stop_session("SES-2", reason="医生外出", key="k")
    first = await cat.service.sync_hospital("H001")
    second = await cat.service.sync_hospital("H001")
    events = await _events(committed_source, "catalogue.session_stopped")
    assert first.stopped == 1
    assert second.stopped == 0
    assert events == [{"hospitalCode": "H001", "sessionId": "SES-2", "reason": "医生外出", "source": "his"}]
    stopped = await cat.service.sessions("H001", doctor_code="P-2")
    assert stopped[0].status is SessionStatus.STOPPED
    assert stopped[0].remaining == 0


async def test_the_doctor_stops_a_session_at_the_his_first(cat: Catalogue, committed_source: ConnectionSource) -> None:
    await cat.service.sync_hospital("H001")
    doctor = _staff({StaffRole.DOCTOR.value})
    with pytest.raises(NotYourSessionError):
        await cat.service.stop_session(doctor, "H001", "SES-1", reason="x", links={"H001": "P-2"})
    cat.his.online = False
    with pytest.raises(Exception) as down:
        await cat.service.stop_session(doctor, "H001", "SES-1", reason="会诊", links={"H001": "P-1"})
    assert getattr(down.value, "status", 0) == 503
    assert (await cat.service.sessions("H001", doctor_code="P-1"))[0].status is SessionStatus.OPEN, (
        "nothing changes here when the HIS did not take the stop"
    )
    cat.his.online = True
    await cat.service.stop_session(doctor, "H001", "SES-1", reason="会诊", links={"H001": "P-1"})
    assert cat.his.stops == [("SES-1", "会诊")]
    assert (await cat.service.sessions("H001", doctor_code="P-1"))[0].status is SessionStatus.STOPPED
    events = await _events(committed_source, "catalogue.session_stopped")
    assert events[-1]["source"] == "doctor"


async def test_catalogue_routes_serve_our_copy_even_when_the_his_is_down(
    cat: Catalogue, committed_source: ConnectionSource
) -> None:
    await cat.service.sync_hospital("H001")
    cat.his.online = False
    public, _, deps = build_test_apps(committed_source, clock=cat.clock)
    deps.catalogue = cat.service
    async with asgi_client(public) as client:
        hospitals = await client.get("/api/v1/patient/catalogue/hospitals", params={"region": "5323"})
        depts = await client.get("/api/v1/patient/catalogue/hospitals/H001/departments")
        found = await client.get("/api/v1/patient/catalogue/doctors", params={"q": "哮喘"})
        sessions = await client.get("/api/v1/patient/catalogue/hospitals/H001/doctors/P-1/sessions")
        unknown = await client.get("/api/v1/patient/catalogue/hospitals/H001/doctors/P-404")
        by_level = await client.get("/api/v1/patient/catalogue/hospitals", params={"level": "primary"})
    assert [h["code"] for h in hospitals.json()["items"]] == ["H001"]
    assert [d["name"] for d in depts.json()["items"]] == ["心血管内科", "儿科"]
    assert [d["name"] for d in found.json()["items"]] == ["王晓燕"]
    body = sessions.json()["items"][0]
    assert body["remaining"] == 12
    assert body["feeFen"] == 5000
    assert [s["remaining"] for s in body["slots"]] == [3, 3, 3, 3]
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "catalogue.doctor_not_found"
    assert by_level.json()["items"] == []


async def test_his_push_needs_a_valid_signature(cat: Catalogue, committed_source: ConnectionSource) -> None:
    await cat.service.sync_hospital("H001")
    public, _, deps = build_test_apps(committed_source, clock=cat.clock)
    deps.catalogue = cat.service
    queued: list[tuple[str, dict[str, object]]] = []

    class Runner:
        async def enqueue(
            self, task: str, kwargs: Mapping[str, Any], *, countdown_seconds: float | None = None
        ) -> None:
            queued.append((task, dict(kwargs)))

    class PushReader:
        def changed_sessions(self, hospital_code: str, body: bytes) -> list[str]:
            return ["SES-1"]

    deps.runner = Runner()
    deps.his_push = PushReader()
    body = b'{"resourceType":"Bundle","type":"history","entry":[]}'
    async with asgi_client(public) as client:
        forged = await client.post(
            "/callbacks/his/H001", content=body, headers={"X-HSP-Signature": push_signature("wrong", body)}
        )
        good = await client.post(
            "/callbacks/his/H001", content=body, headers={"X-HSP-Signature": push_signature("push-secret", body)}
        )
    assert forged.status_code == 401
    assert forged.json()["code"] == "callbacks.bad_signature"
    assert good.status_code == 200
    assert queued == [("catalogue.refresh_sessions", {"hospital_code": "H001", "session_ids": ["SES-1"]})]


async def test_the_callback_secret_is_encrypted_at_rest(cat: Catalogue, committed_source: ConnectionSource) -> None:
    async with committed_source.engine.connect() as conn:
        stored = await conn.scalar(sa.text("SELECT callback_secret_cipher FROM hospitals WHERE code = 'H001'"))
    assert stored
    assert "push-secret" not in stored
    assert (await cat.service.hospital("H001")).callback_secret == "push-secret"
