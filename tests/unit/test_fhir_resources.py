"""Reading FHIR R4 resources: the official HL7 examples (tests/fixtures/fhir) parse, unknown elements are ignored,
and the elements we use are checked strictly."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.catalogue.model import DoctorTitle, HospitalLevel, Period, SessionStatus
from integrations.his.resources import (
    FhirParseError,
    loads,
    parse_appointment,
    parse_bundle,
    parse_healthcare_service,
    parse_location,
    parse_money,
    parse_operation_outcome,
    parse_organization,
    parse_patient,
    parse_practitioner,
    parse_practitioner_role,
    parse_schedule,
    parse_slot,
    to_department,
    to_doctor,
    to_session,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"


def official(name: str) -> Any:
    return loads((FIXTURES / f"{name}-example.json").read_bytes())


def test_every_official_example_is_valid_json_of_its_type() -> None:
    expected = {
        "organization": "Organization",
        "location": "Location",
        "healthcareservice": "HealthcareService",
        "practitioner": "Practitioner",
        "practitionerrole": "PractitionerRole",
        "schedule": "Schedule",
        "slot": "Slot",
        "appointment": "Appointment",
        "patient": "Patient",
    }
    found = {path.name.removesuffix("-example.json") for path in FIXTURES.glob("*-example.json")}
    assert found == set(expected)
    for name, resource_type in expected.items():
        assert official(name)["resourceType"] == resource_type


# --- the official examples ---------------------------------------------------------------------------------


def test_official_organization() -> None:
    org = parse_organization(official("organization"))
    assert org.id == "hl7"
    assert org.name == "Health Level Seven International"
    assert org.level is None  # no level extension: ours only
    assert org.phone == "(+1) 734-677-7777"
    assert org.address == "3300 Washtenaw Avenue, Suite 227, Ann Arbor"
    assert org.hospital_code is None


def test_official_location() -> None:
    location = parse_location(official("location"))
    assert (location.id, location.name, location.status) == ("1", "South Wing, second floor", "active")
    assert location.identifiers[0].value == "B1-S.F2"
    assert location.address == "Galapagosweg 91, Building A, Den Burg"


def test_official_healthcare_service_parses_but_is_not_one_of_our_departments() -> None:
    service = parse_healthcare_service(official("healthcareservice"))
    assert service.id == "example"
    assert service.name == "Consulting psychologists and/or psychology services"
    assert service.comment.startswith("Providing Specialist psychology services")
    assert service.active is True
    assert service.parent_code is None
    assert service.department_code is None  # its identifier is http://example.org/shared-ids
    with pytest.raises(FhirParseError, match=r"HealthcareService\.identifier: no urn:hsp:department"):
        to_department(service, "H001")


def test_official_practitioner_name_falls_back_to_given_and_family() -> None:
    practitioner = parse_practitioner(official("practitioner"))
    assert practitioner.id == "example"
    assert practitioner.name == "Adam Careful"
    assert practitioner.active is True
    assert practitioner.practitioner_code is None


def test_official_practitioner_role() -> None:
    role = parse_practitioner_role(official("practitionerrole"))
    assert role.id == "example"
    assert role.active is True
    assert role.practitioner is not None
    assert role.practitioner.id_of("Practitioner") == "example"
    assert [ref.id_of("HealthcareService") for ref in role.healthcare_services] == ["example"]
    assert role.title_code == "RP"
    assert role.specialties == ("General medical practice",)  # no text: the coding's display
    # Neither our practitioner identifier nor one of our titles ("RP" is v2-0286 referring provider).
    practitioner = parse_practitioner(official("practitioner"))
    with pytest.raises(FhirParseError, match=r"PractitionerRole\.practitioner: no urn:hsp:practitioner"):
        to_doctor(role, practitioner, "H001", {"example": "D1"})
    raw = copy.deepcopy(official("practitioner"))
    raw["identifier"].append({"system": "urn:hsp:practitioner", "value": "P1"})
    with pytest.raises(FhirParseError, match=r"PractitionerRole\.code\[0\]: is not a doctor title"):
        to_doctor(role, parse_practitioner(raw), "H001", {"example": "D1"})


def test_official_schedule() -> None:
    schedule = parse_schedule(official("schedule"))
    assert schedule.id == "example"
    assert schedule.identifiers[0].system == "http://example.org/scheduleid"
    assert schedule.identifiers[0].value == "45"
    assert schedule.active is True
    assert schedule.start == datetime(2013, 12, 25, 9, 15, tzinfo=UTC)
    assert schedule.end == datetime(2013, 12, 25, 9, 30, tzinfo=UTC)
    assert schedule.actors[0].id_of("Location") == "1"
    assert (schedule.period, schedule.fee, schedule.stop_reason, schedule.version) == (None, None, None, "")
    assert schedule.session_id is None


def test_official_slot() -> None:
    slot = parse_slot(official("slot"))
    assert slot.id == "example"
    assert slot.schedule.id_of("Schedule") == "example"
    assert slot.status == "free"
    assert slot.start == datetime(2013, 12, 25, 9, 15, tzinfo=UTC)
    assert slot.end == datetime(2013, 12, 25, 9, 30, tzinfo=UTC)
    assert slot.start.tzinfo is UTC
    assert (slot.platform_capacity, slot.platform_booked) == (None, None)


def test_official_appointment() -> None:
    appointment = parse_appointment(official("appointment"))
    assert appointment.id == "example"
    assert appointment.status == "booked"
    assert appointment.slots == ()
    assert next(p.id_of("Patient") for p in appointment.participants) == "example"
    assert (appointment.queue_number, appointment.queue_ahead, appointment.lock_expires) == (None, None, None)


def test_official_patient() -> None:
    patient = parse_patient(official("patient"))
    assert patient.id == "example"
    assert patient.name == "Peter James Chalmers"
    assert patient.gender == "male"
    assert patient.birth_date == date(1974, 12, 25)
    assert patient.identifiers[0].system == "urn:oid:1.2.36.146.595.217.0.1"
    assert patient.patid is None
    assert "12345" not in repr(patient)
    assert "Chalmers" not in repr(patient)


# --- unknown elements are ignored --------------------------------------------------------------------------


def _with_unknowns(raw: Any) -> Any:
    """Unknown elements at every level we read, and unknown extensions."""
    if isinstance(raw, dict):
        grown = {key: _with_unknowns(value) for key, value in raw.items()}
        grown["futureElement"] = {"nested": [1, 2, 3]}
        grown.setdefault("extension", [])
        grown["extension"] = [*grown["extension"], {"url": "http://example.org/unknown", "valueBoolean": True}]
        return grown
    if isinstance(raw, list):
        return [_with_unknowns(item) for item in raw]
    return raw


@pytest.mark.parametrize(
    ("name", "parse"),
    [
        ("organization", parse_organization),
        ("location", parse_location),
        ("healthcareservice", parse_healthcare_service),
        ("practitioner", parse_practitioner),
        ("practitionerrole", parse_practitioner_role),
        ("schedule", parse_schedule),
        ("slot", parse_slot),
        ("appointment", parse_appointment),
        ("patient", parse_patient),
    ],
)
def test_unknown_elements_and_extensions_are_ignored(name: str, parse: Any) -> None:
    plain = parse(official(name))
    grown = parse(_with_unknowns(official(name)))
    if name == "appointment":  # keeps the raw resource for updates; compare what we read
        assert (grown.id, grown.status, grown.slots, grown.participants) == (
            plain.id,
            plain.status,
            plain.slots,
            plain.participants,
        )
    else:
        assert grown == plain


# --- our profile on top of the official examples -----------------------------------------------------------


def ours_schedule() -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(official("schedule"))
    raw["meta"] = {"versionId": "7"}
    raw["identifier"].append({"system": "urn:hsp:session", "value": "S20250303-P1001-AM"})
    raw["planningHorizon"] = {"start": "2025-03-03T08:00:00+08:00", "end": "2025-03-03T12:00:00+08:00"}
    raw["actor"] = [
        {"reference": "HealthcareService/D102", "identifier": {"system": "urn:hsp:department", "value": "D102"}},
        {"reference": "PractitionerRole/R9"},
    ]
    raw["extension"] = [
        {"url": "period", "valueCode": "morning"},
        {"url": "fee", "valueMoney": {"value": Decimal("50.5"), "currency": "CNY"}},
    ]
    return raw


def ours_slot() -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(official("slot"))
    raw["id"] = "S20250303-P1001-AM-01"
    raw["start"], raw["end"] = "2025-03-03T08:00:00+08:00", "2025-03-03T08:30:00+08:00"
    raw["extension"] = [
        {"url": "http://hsp.example/StructureDefinition/platform-capacity", "valueInteger": 3},
        {"url": "platform-booked", "valueInteger": 1},
    ]
    return raw


def test_a_session_from_our_profile() -> None:
    schedule = parse_schedule(ours_schedule())
    slot = parse_slot(ours_slot())
    session = to_session(schedule, [slot], "H001", department_of={}, doctor_of={"R9": "P1001"})
    assert session.id == "S20250303-P1001-AM"
    assert (session.department_code, session.doctor_code) == ("D102", "P1001")
    assert session.day == date(2025, 3, 3)  # the horizon's start in Asia/Shanghai
    assert session.period is Period.MORNING
    assert session.fee_fen == 5050
    assert session.status is SessionStatus.OPEN
    assert session.version == "7"
    assert session.slots[0].start == datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
    assert (session.slots[0].capacity, session.slots[0].his_booked) == (3, 1)  # canonical URL matched by name


def test_a_session_day_is_the_day_in_shanghai_not_in_utc() -> None:
    raw = ours_schedule()
    raw["planningHorizon"] = {"start": "2025-03-02T23:30:00Z", "end": "2025-03-03T03:00:00Z"}  # 07:30 China
    session = to_session(parse_schedule(raw), [], "H001", department_of={}, doctor_of={})
    assert session.day == date(2025, 3, 3)


def test_a_stopped_session_and_a_past_one() -> None:
    raw = ours_schedule()
    raw["active"] = False
    raw["extension"].append({"url": "stop-reason", "valueString": "医生参加学术会议"})
    stopped = to_session(parse_schedule(raw), [], "H001", department_of={}, doctor_of={})
    assert (stopped.status, stopped.stop_reason) == (SessionStatus.STOPPED, "医生参加学术会议")
    past = to_session(
        parse_schedule(ours_schedule()),
        [],
        "H001",
        department_of={},
        doctor_of={},
        now=datetime(2025, 3, 3, 5, 0, tzinfo=UTC),
    )
    assert past.status is SessionStatus.CLOSED


def test_a_doctor_from_our_profile() -> None:
    role_raw = copy.deepcopy(official("practitionerrole"))
    role_raw["code"] = [{"coding": [{"system": "urn:hsp:title", "code": "chief"}], "text": "主任医师"}]
    role_raw["specialty"] = [{"text": "高血压"}, {"text": "冠心病"}]
    role_raw["active"] = False
    role_raw["extension"] = [{"url": "introduction", "valueString": "擅长高血压"}]
    practitioner_raw = copy.deepcopy(official("practitioner"))
    practitioner_raw["identifier"].append({"system": "urn:hsp:practitioner", "value": "P1001"})
    practitioner_raw["name"] = [{"text": "李建国", "family": "李", "given": ["建国"]}]
    doctor = to_doctor(
        parse_practitioner_role(role_raw), parse_practitioner(practitioner_raw), "H001", {"example": "D102"}
    )
    assert (doctor.code, doctor.name, doctor.title) == ("P1001", "李建国", DoctorTitle.CHIEF)
    assert doctor.department_codes == ("D102",)
    assert doctor.specialties == ("高血压", "冠心病")
    assert (doctor.on_leave, doctor.introduction) == (True, "擅长高血压")


def test_organization_level_from_our_extension() -> None:
    raw = copy.deepcopy(official("organization"))
    raw["extension"] = [{"url": "level", "valueCode": "tertiary"}]
    assert parse_organization(raw).level is HospitalLevel.TERTIARY
    raw["extension"] = [{"url": "level", "valueCode": "quaternary"}]
    with pytest.raises(FhirParseError, match=r"extension\[level\]"):
        parse_organization(raw)


def test_appointment_extensions() -> None:
    raw = copy.deepcopy(official("appointment"))
    raw["extension"] = [
        {"url": "lock-expires", "valueInstant": "2025-03-03T08:10:00+08:00"},
        {"url": "queue-number", "valueInteger": 11},
        {"url": "queue-ahead", "valueInteger": 2},
        {"url": "queue-current", "valueInteger": 8},
    ]
    appointment = parse_appointment(raw)
    assert appointment.lock_expires == datetime(2025, 3, 3, 0, 10, tzinfo=UTC)
    assert (appointment.queue_number, appointment.queue_ahead, appointment.queue_current) == (11, 2, 8)


# --- strictness ---------------------------------------------------------------------------------------------


def test_a_slot_without_start_is_refused() -> None:
    raw = official("slot")
    del raw["start"]
    with pytest.raises(FhirParseError, match=r"^Slot\.start: is required$"):
        parse_slot(raw)


def test_a_slot_with_a_start_without_offset_is_refused() -> None:
    raw = official("slot")
    raw["start"] = "2013-12-25T09:15:00"
    with pytest.raises(FhirParseError, match=r"Slot\.start: must carry a time-zone offset"):
        parse_slot(raw)


def test_a_slot_with_an_unknown_status_is_refused() -> None:
    raw = official("slot")
    raw["status"] = "available"
    with pytest.raises(FhirParseError, match=r"Slot\.status"):
        parse_slot(raw)


def test_a_schedule_without_identifier_is_refused() -> None:
    raw = official("schedule")
    del raw["identifier"]
    with pytest.raises(FhirParseError, match=r"^Schedule\.identifier: is required"):
        parse_schedule(raw)


def test_a_schedule_of_another_system_has_no_session_id() -> None:
    with pytest.raises(FhirParseError, match=r"Schedule\.identifier: no urn:hsp:session"):
        to_session(parse_schedule(official("schedule")), [], "H001", department_of={}, doctor_of={})


def test_a_money_value_with_three_decimals_is_refused() -> None:
    raw = ours_schedule()
    raw["extension"][1]["valueMoney"]["value"] = Decimal("50.125")
    schedule = parse_schedule(raw)
    with pytest.raises(FhirParseError, match=r"valueMoney\.value: must be a yuan amount with at most two decimals"):
        to_session(schedule, [], "H001", department_of={}, doctor_of={})


def test_money_is_exact_and_never_a_float() -> None:
    assert parse_money(loads(b'{"value": 0.1, "currency": "CNY"}'), "m").to_fen() == 10
    assert parse_money(loads(b'{"value": 19.99, "currency": "CNY"}'), "m").to_fen() == 1999
    assert parse_money(loads(b'{"value": 50.0}'), "m").to_fen() == 5000
    assert parse_money(loads(b'{"value": 12}'), "m").to_fen() == 1200
    with pytest.raises(FhirParseError, match="never a binary float"):
        parse_money(json.loads('{"value": 0.1}'), "m")
    with pytest.raises(FhirParseError, match="must be CNY"):
        parse_money(loads(b'{"value": 1, "currency": "USD"}'), "m").to_fen()
    with pytest.raises(FhirParseError, match="must be a number"):
        parse_money({"value": "1.00"}, "m")


def test_wrong_types_in_used_elements_are_refused() -> None:
    raw = official("schedule")
    raw["active"] = "yes"
    with pytest.raises(FhirParseError, match=r"Schedule\.active: must be a boolean"):
        parse_schedule(raw)
    raw = ours_slot()
    raw["extension"][0]["valueInteger"] = "3"
    with pytest.raises(FhirParseError, match=r"platform-capacity"):
        parse_slot(raw)
    with pytest.raises(FhirParseError, match=r"Slot\.resourceType"):
        parse_slot(official("schedule"))


def test_parse_errors_never_carry_values() -> None:
    raw = official("patient")
    raw["birthDate"] = "1974-13-45"
    with pytest.raises(FhirParseError) as caught:
        parse_patient(raw)
    assert "1974" not in str(caught.value)
    assert str(caught.value) == "Patient.birthDate: is not a date (YYYY-MM-DD)"


# --- bundles and outcomes -----------------------------------------------------------------------------------


def test_a_searchset_with_includes_and_a_next_link() -> None:
    bundle = parse_bundle(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "self", "url": "x"}, {"relation": "next", "url": "http://h/fhir/Slot?page=2"}],
            "entry": [
                {"resource": official("practitionerrole"), "search": {"mode": "match"}},
                {"resource": official("practitioner"), "search": {"mode": "include"}},
                {"fullUrl": "urn:uuid:no-resource"},
            ],
        },
        expected_type="searchset",
    )
    assert bundle.next_url == "http://h/fhir/Slot?page=2"
    assert len(bundle.resources("PractitionerRole", mode="match")) == 1
    assert len(bundle.resources("Practitioner", mode="include")) == 1
    assert bundle.resources("Practitioner", mode="match") == []
    with pytest.raises(FhirParseError, match=r"Bundle\.type: expected searchset"):
        parse_bundle({"resourceType": "Bundle", "type": "history"}, expected_type="searchset")


def test_operation_outcome_is_read_leniently() -> None:
    outcome = parse_operation_outcome(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "conflict", "details": {"coding": [{"code": "slot-full"}]}}],
        }
    )
    assert outcome.first_code == "conflict"
    assert outcome.issues[0].detail_codes == ("slot-full",)
    assert parse_operation_outcome({"error": "html page"}).issues == ()
