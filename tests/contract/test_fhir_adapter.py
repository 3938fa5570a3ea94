"""The FHIR R4 HIS adapter over real HTTP against the sandbox HIS (docs/his-fhir-profile.md), plus its error
mapping against scripted answers; its billing (诊间支付) too, straight and behind the resilient gateway."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from domain.billing.model import BillItem, BillStatus
from domain.billing.ports import BillNotFoundError, BillSettlementRefusedError, HisBilling, SettlementRefusal
from domain.catalogue.model import SessionStatus
from domain.catalogue.ports import HisAdapter, HisRejectedError, HisUnavailableError
from domain.kernel.clock import Clock
from integrations.his import FhirHisAdapter, ResiliencePolicy, ResilientHisGateway
from integrations.resilience import Backoff, BreakerState
from sandbox.framework import SandboxContext, build_sandbox_app, run_standalone
from sandbox.his import HisSimulator
from tests.contract.his_contract import (
    DAYS,
    DRUG,
    LAB,
    HisAdapterContract,
    HisBillingContract,
    child_of,
    new_patient,
    new_person,
    open_slot,
    today_of,
)
from tests.support.clock import ManualClock

START = datetime(2025, 3, 2, 22, 0, tzinfo=UTC)
"""Monday 3 March 2025, 06:00 in China: today's morning clinics are still ahead."""


@dataclass
class HisSandbox:
    url: str
    http: httpx.AsyncClient
    clock: ManualClock
    simulator: HisSimulator
    sent: list[httpx.Request] = field(default_factory=list)

    def base(self, hospital: str = "H001") -> str:
        return f"{self.url}/sandbox/his/{hospital}/fhir"

    def adapter(self, hospital: str = "H001", **options: Any) -> FhirHisAdapter:
        return FhirHisAdapter(
            hospital_code=hospital, base_url=self.base(hospital), http=self.http, clock=self.clock, **options
        )

    async def switch(self, hospital: str, *, online: bool) -> None:
        answer = await self.http.put(f"{self.url}/sandbox/his/test/{hospital}/online", json={"online": online})
        assert answer.status_code == 200, answer.text

    async def faults(self, inbound: dict[str, Any]) -> None:
        answer = await self.http.put(f"{self.url}/sandbox/admin/his/faults", json={"inbound": inbound})
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def his_sandbox() -> AsyncIterator[HisSandbox]:
    clock = ManualClock(START)
    simulator = HisSimulator(days_ahead=DAYS)
    app = build_sandbox_app([simulator], SandboxContext(clock), pump_interval=None)
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with (
        run_standalone(app) as url,
        httpx.AsyncClient(trust_env=False, timeout=5.0, event_hooks={"request": [record]}) as http,
    ):
        yield HisSandbox(url=url, http=http, clock=clock, simulator=simulator, sent=sent)


@pytest.fixture
def his_clock(his_sandbox: HisSandbox) -> Clock:
    return his_sandbox.clock


@pytest.fixture
def his_adapter(his_sandbox: HisSandbox) -> HisAdapter:
    return his_sandbox.adapter()


class TestFhirAdapterContract(HisAdapterContract):
    """The FHIR adapter, straight."""


@dataclass
class SandboxBillingDesk:
    """The ``BillingDesk`` of a sandbox hospital: its test routes."""

    sandbox: HisSandbox
    hospital_code: str = "H001"

    def _test(self, path: str) -> str:
        return f"{self.sandbox.url}/sandbox/his/test/{self.hospital_code}/{path}"

    async def new_patient(self) -> str:
        return await new_patient(self.sandbox.adapter(self.hospital_code))

    async def add_bill(self, patid: str, items: Sequence[BillItem]) -> str:
        lines = [
            {
                "code": i.code,
                "name": i.name,
                "quantity": i.quantity,
                "unitPriceFen": i.unit_price_fen,
                "category": i.category,
            }
            for i in items
        ]
        answer = await self.sandbox.http.post(self._test("bills"), json={"patid": patid, "items": lines})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def cancel_bill(self, bill_id: str) -> None:
        answer = await self.sandbox.http.post(self._test(f"bills/{bill_id}/cancel"), json={"reason": "医生撤销医嘱"})
        assert answer.status_code == 200, answer.text

    async def refuse_next_settlement(self) -> None:
        answer = await self.sandbox.http.put(self._test("billing"), json={"refuseNext": 1})
        assert answer.status_code == 200, answer.text

    async def set_available(self, available: bool) -> None:
        answer = await self.sandbox.http.put(self._test("billing"), json={"unavailable": not available})
        assert answer.status_code == 200, answer.text

    async def bills(self, patid: str) -> dict[str, dict[str, Any]]:
        """The sandbox's own record of a patient's bills, by id."""
        answer = await self.sandbox.http.get(self._test("bills"), params={"patid": patid})
        assert answer.status_code == 200, answer.text
        return {b["id"]: b for b in answer.json()["bills"]}


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
def billing_desk(his_sandbox: HisSandbox) -> SandboxBillingDesk:
    return SandboxBillingDesk(his_sandbox)


@pytest.fixture
def his_billing(his_sandbox: HisSandbox) -> HisBilling:
    return his_sandbox.adapter()


class TestFhirAdapterBillingContract(HisBillingContract):
    """The FHIR adapter's billing, straight."""


class TestFhirAdapterBillingBehindTheGatewayContract(HisBillingContract):
    """The same billing as the application gets it: ``billing_for`` of the resilient gateway (reads retried
    without pausing, and a breaker loose enough not to open while billing is switched off on purpose)."""

    @pytest.fixture
    def his_billing(self, his_sandbox: HisSandbox) -> HisBilling:
        policy = ResiliencePolicy(failure_threshold=50)
        gateway = ResilientHisGateway(
            clock=his_sandbox.clock, policy=policy, adapters=[his_sandbox.adapter()], sleep=_no_sleep
        )
        return gateway.billing_for("H001")


class TestFhirAdapterBehindTheGatewayContract(HisAdapterContract):
    """The same adapter as the application gets it: behind the resilient gateway."""

    @pytest.fixture
    def his_adapter(self, his_sandbox: HisSandbox) -> HisAdapter:
        gateway = ResilientHisGateway(clock=his_sandbox.clock, adapters=[his_sandbox.adapter()])
        return gateway.for_hospital("H001")


# --- the profile over HTTP ---------------------------------------------------------------------------------


async def test_fees_are_exact_fen_and_days_are_days_in_china(his_sandbox: HisSandbox) -> None:
    today = today_of(his_sandbox.clock)
    sessions = await his_sandbox.adapter().sessions(today, today)
    answer = await his_sandbox.http.get(f"{his_sandbox.url}/sandbox/his/test/H001/sessions", params={"day": str(today)})
    truth = {s["id"]: s for s in json.loads(answer.content, parse_float=Decimal)["sessions"]}
    assert {s.id for s in sessions} == set(truth)
    for session in sessions:
        assert session.fee_fen == int(Decimal(truth[session.id]["fee"]) * 100)
        assert session.day == today
        assert session.status is (SessionStatus.OPEN if truth[session.id]["active"] else SessionStatus.STOPPED)
        assert [s.capacity for s in session.slots] == [s["capacity"] for s in truth[session.id]["slots"]]
        assert [s.his_booked for s in session.slots] == [s["booked"] for s in truth[session.id]["slots"]]
        assert all(slot.start.tzinfo is UTC for slot in session.slots)


async def test_paging_follows_next_links(his_sandbox: HisSandbox) -> None:
    small, large = his_sandbox.adapter(page_size=4), his_sandbox.adapter(page_size=1000)
    today = today_of(his_sandbox.clock)
    assert await small.departments() == await large.departments()
    assert await small.doctors() == await large.doctors()
    assert await small.sessions(today, today + timedelta(days=1)) == await large.sessions(
        today, today + timedelta(days=1)
    )
    pages = [r for r in his_sandbox.sent if r.url.path.endswith("/Schedule") and "_offset" in r.url.params]
    assert pages, "the small page size made the adapter follow next links"


async def test_every_sandbox_hospital_reads(his_sandbox: HisSandbox) -> None:
    for hospital in ("H001", "H002", "H003"):
        adapter = his_sandbox.adapter(hospital)
        organization = await adapter.organization()
        assert organization.hospital_code == hospital
        assert organization.level is not None
        departments = await adapter.departments()
        doctors = await adapter.doctors()
        assert departments
        assert doctors
        assert sum(d.on_leave for d in doctors) <= 4


async def test_request_key_and_conditional_create_on_the_wire(his_sandbox: HisSandbox) -> None:
    adapter = his_sandbox.adapter()
    person = new_person()
    patid = await adapter.find_or_create(person, key="p-1")
    create = next(r for r in his_sandbox.sent if r.method == "POST" and r.url.path.endswith("/Patient"))
    assert create.headers["if-none-exist"] == f"identifier=urn:oid:2.16.156.10011.1.3|{person.id_number}"
    assert create.headers["content-type"] == "application/fhir+json"
    _, slot = await open_slot(adapter, his_sandbox.clock)
    await adapter.confirm(slot.id, patid=patid, key="confirm-7")
    post = next(r for r in his_sandbox.sent if r.method == "POST" and r.url.path.endswith("/Appointment"))
    body = json.loads(post.content)
    assert body["identifier"] == [{"system": "urn:hsp:request-key", "value": "confirm-7"}]
    assert body["status"] == "booked"
    assert body["slot"] == [{"reference": f"Slot/{slot.id}"}]
    assert body["participant"][0]["actor"]["identifier"] == {"system": "urn:hsp:patid", "value": patid}


async def test_no_patient_identifier_reaches_logs_or_errors(
    his_sandbox: HisSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = his_sandbox.adapter()
    person = new_person(name="保密患者")
    assert person.id_number is not None
    patid = await adapter.find_or_create(person, key="p")
    _, slot = await open_slot(adapter, his_sandbox.clock, fewest_left=True)
    errors: list[str] = []
    for _ in range(slot.capacity - slot.his_booked + 1):
        try:
            await adapter.confirm(slot.id, patid=await new_patient(adapter), key=f"k-{_}")
        except HisRejectedError as exc:
            errors.append(str(exc) + exc.detail + exc.message)
    with pytest.raises(HisRejectedError) as caught:
        await adapter.lock(slot.id, patid=patid, key="late")
    errors.append(str(caught.value) + caught.value.detail)
    assert errors
    # Ours at every level, everyone's from INFO up (httpcore's DEBUG traces echo raw headers: never on in production).
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("integrations") or record.levelno >= logging.INFO
    )
    assert "HIS H001 create Appointment (lock): HTTP 409 (conflict)" in logged
    for secret in (person.id_number, person.name, patid):
        assert secret not in logged
        assert all(secret not in error for error in errors)


# --- resilience over HTTP ----------------------------------------------------------------------------------


async def test_a_his_switched_off_trips_its_breaker_and_recovers(his_sandbox: HisSandbox) -> None:
    policy = ResiliencePolicy(failure_threshold=2, reset_after_seconds=30, read_attempts=1)
    gateway = ResilientHisGateway(
        clock=his_sandbox.clock, policy=policy, adapters=[his_sandbox.adapter("H001"), his_sandbox.adapter("H002")]
    )
    await his_sandbox.switch("H001", online=False)
    for _ in range(2):
        with pytest.raises(HisUnavailableError) as caught:
            await gateway.for_hospital("H001").departments()
        assert (caught.value.code, caught.value.retry_after) == ("his.server_error", 60)
    with pytest.raises(HisUnavailableError) as fast:
        await gateway.for_hospital("H001").departments()
    assert fast.value.code == "his.circuit_open"
    assert await gateway.for_hospital("H002").departments()  # the other hospital is untouched
    health = {h.hospital_code: h for h in gateway.health()}
    assert health["H001"].breaker is BreakerState.OPEN
    assert health["H002"].breaker is BreakerState.CLOSED

    await his_sandbox.switch("H001", online=True)
    await his_sandbox.clock.advance(30)
    assert await gateway.for_hospital("H001").departments()
    assert gateway.health()[0].breaker is BreakerState.CLOSED


async def test_timeouts_and_throttling_over_http(his_sandbox: HisSandbox) -> None:
    await his_sandbox.faults({"pathPrefix": "/H001/fhir/HealthcareService", "timeoutRate": 1.0, "timeoutSeconds": 0.5})
    with pytest.raises(HisUnavailableError) as timed_out:
        await his_sandbox.adapter(timeout_seconds=0.1).departments()
    assert timed_out.value.code == "his.timeout"

    await his_sandbox.faults({"pathPrefix": "/H001/fhir/HealthcareService", "errorRate": 1.0, "errorStatus": 429})
    with pytest.raises(HisUnavailableError) as throttled:
        await his_sandbox.adapter().departments()
    assert throttled.value.code == "his.throttled"

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    policy = ResiliencePolicy(read_attempts=3, backoff=Backoff(base_seconds=0.1, jitter=0.0))
    gateway = ResilientHisGateway(clock=his_sandbox.clock, policy=policy, adapters=[his_sandbox.adapter()], sleep=sleep)
    with pytest.raises(HisUnavailableError):
        await gateway.for_hospital("H001").departments()
    assert pauses == [0.1, 0.2]  # a read retried twice with backoff
    await his_sandbox.faults({})
    assert await gateway.for_hospital("H001").departments()


# --- error mapping against scripted answers ----------------------------------------------------------------

BASE = "https://his.example/fhir"
Handler = Callable[[httpx.Request], httpx.Response]


def scripted(handler: Handler, **options: Any) -> FhirHisAdapter:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return FhirHisAdapter(hospital_code="H9", base_url=BASE, http=http, clock=ManualClock(START), **options)


def outcome(status: int, code: str, headers: dict[str, str] | None = None) -> Handler:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": "秘密"}]}
    return lambda request: httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "issue", "headers", "error", "code", "retry_after"),
    [
        (404, "not-found", None, HisRejectedError, "his.not_found", None),
        (409, "conflict", None, HisRejectedError, "his.slot_full", None),
        (412, "multiple-matches", None, HisRejectedError, "his.ambiguous_match", None),
        (422, "business-rule", None, HisRejectedError, "his.business_rule", None),
        (400, "invalid", None, HisRejectedError, "his.bad_request", None),
        (429, "throttled", {"Retry-After": "7"}, HisUnavailableError, "his.throttled", 7),
        (500, "exception", None, HisUnavailableError, "his.server_error", None),
        (503, "transient", {"Retry-After": "60"}, HisUnavailableError, "his.server_error", 60),
        (401, "login", None, HisUnavailableError, "his.bad_response", None),
    ],
)
async def test_http_statuses_map_to_categories(
    status: int, issue: str, headers: dict[str, str] | None, error: type[Exception], code: str, retry_after: int | None
) -> None:
    adapter = scripted(outcome(status, issue, headers))
    with pytest.raises(error) as caught:
        await adapter.lock("S1", patid="100000001", key="k")
    assert getattr(caught.value, "code", None) == code
    if retry_after is not None:
        assert getattr(caught.value, "retry_after", None) == retry_after
    assert "秘密" not in str(caught.value)  # the HIS's free text stays out
    assert "100000001" not in str(caught.value)


@pytest.mark.parametrize(
    ("exc", "code"),
    [(httpx.ReadTimeout("slow"), "his.timeout"), (httpx.ConnectError("refused"), "his.transport")],
)
async def test_transport_failures_are_unavailable(exc: Exception, code: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(HisUnavailableError) as caught:
        await scripted(fail).departments()
    assert caught.value.code == code


def _searchset(next_url: str | None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


async def test_a_paging_loop_is_cut() -> None:
    adapter = scripted(lambda request: httpx.Response(200, json=_searchset(f"{BASE}/HealthcareService?page=2")))
    with pytest.raises(HisUnavailableError) as caught:
        await adapter.departments()
    assert caught.value.code == "his.bad_response"
    assert "paging does not end" in caught.value.detail


async def test_a_next_link_leaving_the_base_is_refused() -> None:
    adapter = scripted(lambda request: httpx.Response(200, json=_searchset("https://elsewhere.example/fhir/x")))
    with pytest.raises(HisUnavailableError) as caught:
        await adapter.departments()
    assert "leaves the FHIR base" in caught.value.detail


async def test_answers_breaking_the_profile_are_bad_responses() -> None:
    with pytest.raises(HisUnavailableError) as not_json:
        await scripted(lambda request: httpx.Response(200, content=b"<html>")).departments()
    assert not_json.value.code == "his.bad_response"

    slot = {"resourceType": "Slot", "id": "s", "schedule": {"reference": "Schedule/x"}, "status": "free"}
    schedule = {
        "resourceType": "Schedule",
        "id": "x",
        "identifier": [{"system": "urn:hsp:session", "value": "S1"}],
        "actor": [{"identifier": {"system": "urn:hsp:department", "value": "D1"}}],
        "planningHorizon": {"start": "2025-03-03T08:00:00+08:00", "end": "2025-03-03T12:00:00+08:00"},
        "extension": [{"url": "period", "valueCode": "morning"}, {"url": "fee", "valueMoney": {"value": 10}}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        found = slot if request.url.path.endswith("/Slot") else schedule
        return httpx.Response(200, json={**_searchset(None), "entry": [{"resource": found}]})

    with pytest.raises(HisUnavailableError) as no_start:
        await scripted(answer).session("S1")
    assert no_start.value.code == "his.bad_response"
    assert no_start.value.detail.endswith("Slot.start: is required")


async def test_a_patient_without_any_document_is_not_created_blindly() -> None:
    adapter = scripted(lambda request: httpx.Response(500))
    from domain.catalogue.model import PatientDocument
    from domain.kernel.errors import ValidationError

    with pytest.raises(ValidationError):
        await adapter.find_or_create(PatientDocument("无证件", "F", date(2020, 1, 1)), key="k")


# --- finding a patient without creating one ----------------------------------------------------------------


async def test_a_patient_search_on_the_wire_never_creates(his_sandbox: HisSandbox) -> None:
    adapter = his_sandbox.adapter()
    person = new_person()
    assert await adapter.find(person) is None
    search = his_sandbox.sent[-1]
    assert (search.method, search.url.path) == ("GET", "/sandbox/his/H001/fhir/Patient")
    assert search.url.params.get_list("identifier") == [f"urn:oid:2.16.156.10011.1.3|{person.id_number}"]
    child = child_of(person)
    assert await adapter.find(child) is None
    search = his_sandbox.sent[-1]
    assert dict(search.url.params) == {
        "guardian-identifier": f"urn:oid:2.16.156.10011.1.3|{person.id_number}",
        "name": "测试宝宝",
        "birthdate": "2024-05-01",
        "_count": "2",
    }
    assert not any(r.method == "POST" for r in his_sandbox.sent)
    assert not his_sandbox.simulator.hospital("H001").patients


async def test_more_than_one_match_is_ambiguous(his_sandbox: HisSandbox) -> None:
    """The HIS recorded one person twice (two windows, no matching): which record is the person's is the
    hospital's to settle, not ours to guess."""
    person = new_person(name="重复建档")
    assert person.id_number is not None
    resource = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": person.id_number}],
        "name": [{"text": person.name}],
        "birthDate": person.birth_date.isoformat(),
    }
    for _ in range(2):  # plain creates, without a condition
        answer = await his_sandbox.http.post(
            f"{his_sandbox.base()}/Patient", json=resource, headers={"Content-Type": "application/fhir+json"}
        )
        assert answer.status_code == 201, answer.text
    with pytest.raises(HisRejectedError) as caught:
        await his_sandbox.adapter().find(person)
    assert caught.value.code == "his.ambiguous_match"
    assert person.id_number not in str(caught.value) + caught.value.detail
    assert person.name not in str(caught.value) + caught.value.detail


def _patient(patid: str | None, id_number: str, **extra: Any) -> dict[str, Any]:
    identifiers = [{"system": "urn:oid:2.16.156.10011.1.3", "value": id_number}]
    if patid:
        identifiers.append({"system": "urn:hsp:patid", "value": patid})
    return {"resourceType": "Patient", "id": patid or "x", "identifier": identifiers, **extra}


@pytest.mark.parametrize(
    ("entries", "next_url", "code"),
    [
        ([_patient("P1", "other")], None, "his.bad_response"),  # a HIS ignoring the parameter answers someone else
        ([_patient(None, "{id}")], None, "his.bad_response"),  # no patid
        ([_patient("P1", "{id}")], f"{BASE}/Patient?page=2", "his.ambiguous_match"),  # more on the next page
        ([_patient("P1", "{id}"), _patient("P2", "{id}")], None, "his.ambiguous_match"),
    ],
)
async def test_a_patient_search_answer_must_be_the_one_person(
    entries: list[dict[str, Any]], next_url: str | None, code: str
) -> None:
    person = new_person()
    assert person.id_number is not None
    found = [json.loads(json.dumps(e).replace("{id}", person.id_number)) for e in entries]
    bundle = {**_searchset(next_url), "entry": [{"resource": e, "search": {"mode": "match"}} for e in found]}
    with pytest.raises((HisRejectedError, HisUnavailableError)) as caught:
        await scripted(lambda request: httpx.Response(200, json=bundle)).find(person)
    assert getattr(caught.value, "code", None) == code


async def test_a_child_found_must_be_the_guardians_child_of_that_name_and_birth_date() -> None:
    guardian = new_person()
    child = child_of(guardian)
    contact = {
        "extension": [
            {
                "url": "guardian-identifier",
                "valueIdentifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": guardian.id_number},
            }
        ]
    }
    good = {
        "resourceType": "Patient",
        "id": "P7",
        "identifier": [{"system": "urn:hsp:patid", "value": "P7"}],
        "name": [{"text": child.name}],
        "birthDate": "2024-05-01",
        "contact": [contact],
    }

    def answering(resource: dict[str, Any]) -> FhirHisAdapter:
        bundle = {**_searchset(None), "entry": [{"resource": resource, "search": {"mode": "match"}}]}
        return scripted(lambda request: httpx.Response(200, json=bundle))

    assert await answering(good).find(child) == "P7"
    wrongs: list[dict[str, Any]] = [{"birthDate": "2024-05-02"}, {"name": [{"text": "别的孩子"}]}, {"contact": []}]
    for wrong in wrongs:
        with pytest.raises(HisUnavailableError) as caught:
            await answering(good | wrong).find(child)
        assert caught.value.code == "his.bad_response"


async def test_the_gateway_retries_a_patient_search_and_creates_once(his_sandbox: HisSandbox) -> None:
    policy = ResiliencePolicy(read_attempts=3, backoff=Backoff(base_seconds=0.1, jitter=0.0))
    gateway = ResilientHisGateway(
        clock=his_sandbox.clock, policy=policy, adapters=[his_sandbox.adapter()], sleep=_no_sleep
    )
    adapter = gateway.for_hospital("H001")
    person = new_person()
    await his_sandbox.faults({"pathPrefix": "/H001/fhir/Patient", "errorRate": 1.0, "errorStatus": 503})

    def patient_requests() -> int:
        return sum(r.url.path.endswith("/Patient") for r in his_sandbox.sent)

    before = patient_requests()
    with pytest.raises(HisUnavailableError):
        await adapter.find(person)
    assert patient_requests() - before == 3  # a read, retried
    before = patient_requests()
    with pytest.raises(HisUnavailableError):
        await adapter.find_or_create(person, key="p-retry")
    assert patient_requests() - before == 1  # a write, once
    await his_sandbox.faults({})
    assert await adapter.find(person) is None
    patid = await adapter.find_or_create(person, key="p-retry")
    assert await adapter.find(person) == patid


# --- billing over HTTP -------------------------------------------------------------------------------------


async def test_bills_on_the_wire(his_sandbox: HisSandbox) -> None:
    adapter, desk = his_sandbox.adapter(), SandboxBillingDesk(his_sandbox)
    patid = await desk.new_patient()
    bill_id = await desk.add_bill(patid, [DRUG])  # 3 x 32.99 = 98.97 yuan
    unpaid = await adapter.unpaid_bills(patid)
    search = next(r for r in his_sandbox.sent if r.method == "GET" and r.url.path.endswith("/Invoice"))
    assert search.url.params.get_list("subject") == [f"Patient/{patid}"]
    assert search.url.params.get_list("status") == ["issued"]

    truth = await desk.bills(patid)
    assert len(truth) >= 2, "the new patient's seeded bills and ours"
    assert {b.bill_id: b.total_fen for b in unpaid} == {i: b["totalFen"] for i, b in truth.items()}
    for bill in unpaid:
        assert [(i.code, i.quantity, i.unit_price_fen) for i in bill.items] == [
            (i["code"], i["quantity"], i["unitPriceFen"]) for i in truth[bill.bill_id]["items"]
        ]

    settlement = await adapter.settle(
        bill_id, patid=patid, amount_fen=9897, payment_ref="4200001234202503031234567890", channel="wechat", key="s-1"
    )
    post = next(r for r in his_sandbox.sent if r.method == "POST" and r.url.path.endswith("/$settle"))
    assert post.url.path.endswith(f"/Invoice/{bill_id}/$settle")
    assert post.headers["content-type"] == "application/fhir+json"
    assert b'"valueMoney":{"value":98.97,"currency":"CNY"}' in post.content  # yuan, exactly
    body = json.loads(post.content, parse_float=Decimal)
    assert body["resourceType"] == "Parameters"
    parameters = {p["name"]: p for p in body["parameter"]}
    assert parameters["amount"]["valueMoney"] == {"value": Decimal("98.97"), "currency": "CNY"}
    assert parameters["requestKey"]["valueIdentifier"] == {"system": "urn:hsp:request-key", "value": "s-1"}
    assert parameters["patient"]["valueIdentifier"] == {"system": "urn:hsp:patid", "value": patid}
    assert parameters["paymentReference"]["valueString"] == "4200001234202503031234567890"
    assert parameters["channel"]["valueCode"] == "wechat"

    recorded = (await desk.bills(patid))[bill_id]
    assert recorded["status"] == "balanced"
    assert (recorded["receiptNo"], recorded["paymentRef"], recorded["channel"]) == (
        settlement.his_receipt_no,
        "4200001234202503031234567890",
        "wechat",
    )
    assert settlement.settled_at == his_sandbox.clock.now()


async def test_a_settlement_whose_answer_was_lost_is_retried_with_its_key(his_sandbox: HisSandbox) -> None:
    desk = SandboxBillingDesk(his_sandbox)
    patid = await desk.new_patient()
    bill_id = await desk.add_bill(patid, [LAB])
    await his_sandbox.faults(
        {"pathPrefix": f"/H001/fhir/Invoice/{bill_id}/", "timeoutRate": 1.0, "timeoutSeconds": 0.5}
    )
    with pytest.raises(HisUnavailableError) as lost:
        await his_sandbox.adapter(timeout_seconds=0.1).settle(
            bill_id, patid=patid, amount_fen=2000, payment_ref="PAY-1", channel="alipay", key="lost-1"
        )
    assert lost.value.code == "his.timeout"
    await his_sandbox.faults({})
    recorded = (await desk.bills(patid))[bill_id]
    assert recorded["status"] == "balanced", "the HIS did the work; only the answer was late"
    settlement = await his_sandbox.adapter().settle(
        bill_id, patid=patid, amount_fen=2000, payment_ref="PAY-1", channel="alipay", key="lost-1"
    )
    assert settlement.his_receipt_no == recorded["receiptNo"]


async def test_the_gateway_retries_bill_reads_and_tries_a_settlement_once(his_sandbox: HisSandbox) -> None:
    desk = SandboxBillingDesk(his_sandbox)
    patid = await desk.new_patient()
    bill_id = await desk.add_bill(patid, [LAB])
    policy = ResiliencePolicy(read_attempts=3, backoff=Backoff(base_seconds=0.1, jitter=0.0))
    gateway = ResilientHisGateway(
        clock=his_sandbox.clock, policy=policy, adapters=[his_sandbox.adapter()], sleep=_no_sleep
    )
    billing = gateway.billing_for("H001")
    await his_sandbox.faults({"pathPrefix": "/H001/fhir/Invoice", "errorRate": 1.0, "errorStatus": 503})

    def invoice_requests() -> int:
        return sum("/Invoice" in r.url.path for r in his_sandbox.sent)

    before = invoice_requests()
    with pytest.raises(HisUnavailableError):
        await billing.unpaid_bills(patid)
    assert invoice_requests() - before == 3  # a read, retried
    before = invoice_requests()
    with pytest.raises(HisUnavailableError):
        await billing.settle(bill_id, patid=patid, amount_fen=2000, payment_ref="PAY-2", channel="wechat", key="g-1")
    assert invoice_requests() - before == 1  # a write, once: the caller retries with the key
    await his_sandbox.faults({})
    assert await billing.settle(bill_id, patid=patid, amount_fen=2000, payment_ref="PAY-2", channel="wechat", key="g-1")


async def test_a_refused_settlement_does_not_trip_the_breaker(his_sandbox: HisSandbox) -> None:
    desk = SandboxBillingDesk(his_sandbox)
    patid = await desk.new_patient()
    bill_id = await desk.add_bill(patid, [LAB])
    gateway = ResilientHisGateway(
        clock=his_sandbox.clock, policy=ResiliencePolicy(failure_threshold=1), adapters=[his_sandbox.adapter()]
    )
    billing = gateway.billing_for("H001")
    for n in range(3):
        with pytest.raises(BillSettlementRefusedError):
            await billing.settle(bill_id, patid=patid, amount_fen=1, payment_ref="PAY", channel="wechat", key=f"r-{n}")
    (health,) = gateway.health()
    assert health.breaker is BreakerState.CLOSED
    assert health.consecutive_failures == 0
    assert (await billing.bill(bill_id)).status is BillStatus.UNPAID


async def test_no_patient_identifier_reaches_billing_logs_or_errors(
    his_sandbox: HisSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter, desk = his_sandbox.adapter(), SandboxBillingDesk(his_sandbox)
    patid = await desk.new_patient()
    bill_id = await desk.add_bill(patid, [LAB])
    await adapter.unpaid_bills(patid)
    errors: list[str] = []
    for amount in (1, 2000):
        try:
            await adapter.settle(bill_id, patid=patid, amount_fen=amount, payment_ref="PAY", channel="wechat", key="x")
        except BillSettlementRefusedError as exc:
            errors.append(str(exc) + exc.detail + exc.message)
    assert len(errors) == 2  # the key's refusal is final
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("integrations"))
    assert "HIS H001 $settle Invoice: HTTP 422 (business-rule) [amount-mismatch]" in logged
    for error in errors:
        assert patid not in error
        assert "缴费金额与账单金额不符" not in error  # the HIS's free text stays out
    assert patid not in logged


# --- billing against scripted answers ----------------------------------------------------------------------


def invoice(
    *, status: str = "issued", patid: str = "900001", lines: Sequence[tuple[str, float, int]] = (("LAB1", 0.1, 1),)
) -> dict[str, Any]:
    total = sum(Decimal(str(amount)) for _, amount, _ in lines)
    resource: dict[str, Any] = {
        "resourceType": "Invoice",
        "id": "INV-1",
        "status": status,
        "subject": {"reference": f"Patient/{patid}"},
        "date": "2025-03-03T09:30:00+08:00",
        "lineItem": [
            {
                "chargeItemCodeableConcept": {
                    "coding": [
                        {"system": "urn:hsp:charge-item", "code": code, "display": f"项目{code}"},
                        {"system": "urn:hsp:fee-category", "code": "lab", "display": "检验费"},
                    ]
                },
                "priceComponent": [
                    {"type": "base", "factor": quantity, "amount": {"value": amount, "currency": "CNY"}}
                ],
            }
            for code, amount, quantity in lines
        ],
        "totalGross": {"value": float(total), "currency": "CNY"},
    }
    if status == "balanced":
        resource["identifier"] = [{"system": "urn:hsp:receipt", "value": "R-1"}]
        resource["extension"] = [{"url": "settled-at", "valueInstant": "2025-03-03T09:40:00+08:00"}]
    return resource


def refusal(status: int, code: str, detail_code: str | None = None) -> Handler:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": "秘密"}
    if detail_code:
        issue["details"] = {"coding": [{"system": "urn:hsp:settlement-refusal", "code": detail_code}], "text": "秘密"}
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return lambda request: httpx.Response(status, json=body)


def answering(body: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(200, json=body)


async def _settle(adapter: FhirHisAdapter, amount_fen: int = 10) -> Any:
    return await adapter.settle(
        "INV-1", patid="900001", amount_fen=amount_fen, payment_ref="P", channel="wechat", key="k"
    )


@pytest.mark.parametrize(
    ("status", "issue", "detail_code", "reason"),
    [
        (409, "conflict", "already-settled", SettlementRefusal.ALREADY_SETTLED),
        (409, "conflict", "bill-cancelled", SettlementRefusal.CANCELLED),
        (422, "business-rule", "amount-mismatch", SettlementRefusal.AMOUNT_MISMATCH),
        (422, "business-rule", "wrong-patient", SettlementRefusal.WRONG_PATIENT),
        (422, "business-rule", "refused", SettlementRefusal.REFUSED),
        (422, "business-rule", None, SettlementRefusal.REFUSED),
        (409, "conflict", "收费窗口已关闭", SettlementRefusal.REFUSED),
        (404, "not-found", None, SettlementRefusal.UNKNOWN_BILL),
        (400, "invalid", None, SettlementRefusal.REFUSED),
    ],
)
async def test_settlement_refusals_are_final(
    status: int, issue: str, detail_code: str | None, reason: SettlementRefusal
) -> None:
    with pytest.raises(BillSettlementRefusedError) as caught:
        await _settle(scripted(refusal(status, issue, detail_code)))
    assert caught.value.code == "his.settlement_refused"
    assert caught.value.reason is reason
    assert caught.value.extra["reason"] == reason.value
    assert "秘密" not in str(caught.value) + caught.value.detail
    assert "900001" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code"), [(503, "his.server_error"), (500, "his.server_error"), (429, "his.throttled")]
)
async def test_settlement_failures_are_retryable(status: int, code: str) -> None:
    with pytest.raises(HisUnavailableError) as caught:
        await _settle(scripted(refusal(status, "transient")))
    assert caught.value.code == code


async def test_a_settlement_answer_must_be_the_balanced_bill() -> None:
    settled = await _settle(scripted(lambda request: httpx.Response(200, json=invoice(status="balanced"))))
    assert (settled.bill_id, settled.his_receipt_no) == ("INV-1", "R-1")
    assert settled.settled_at == datetime(2025, 3, 3, 1, 40, tzinfo=UTC)
    for answer, where in (
        (invoice(status="issued"), "Invoice.status"),
        (invoice(status="balanced", patid="900002"), "Invoice: is not the bill settled"),
        ({**invoice(status="balanced"), "identifier": []}, "Invoice.identifier"),
        (invoice(status="balanced", lines=(("LAB1", 0.2, 1),)), "Invoice.totalGross"),
    ):
        with pytest.raises(HisUnavailableError) as bad:
            await _settle(scripted(answering(answer)))
        assert bad.value.code == "his.bad_response"
        assert where in bad.value.detail
    with pytest.raises(ValueError, match="positive"):
        await _settle(scripted(lambda request: httpx.Response(200, json=invoice(status="balanced"))), amount_fen=0)


async def test_bills_are_exact_fen_and_only_the_patients() -> None:
    lines = (("A", 0.1, 1), ("B", 0.2, 2), ("C", 98.97, 3))
    bundle = {**_searchset(None), "entry": [{"resource": invoice(lines=lines)}]}
    (bill,) = await scripted(lambda request: httpx.Response(200, json=bundle)).unpaid_bills("900001")
    assert [(i.amount_fen, i.quantity, i.unit_price_fen) for i in bill.items] == [
        (10, 1, 10),
        (20, 2, 10),
        (9897, 3, 3299),
    ]
    assert bill.total_fen == bill.self_pay_fen == 9927
    assert bill.title == "门诊缴费：检验费 等3项"

    with pytest.raises(HisUnavailableError) as foreign:
        await scripted(lambda request: httpx.Response(200, json=bundle)).unpaid_bills("900002")
    assert foreign.value.code == "his.bad_response"
    assert "names another patient" in foreign.value.detail

    with pytest.raises(BillNotFoundError):
        await scripted(refusal(404, "not-found")).bill("INV-404")
