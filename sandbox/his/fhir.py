"""FHIR R4 shapes of the sandbox HIS (docs/his-fhir-profile.md): resources as plain dicts, search parameters,
Bundles and OperationOutcomes.

Extensions are named as in the profile: an extension's ``url`` is the bare name the profile gives it
(``level``, ``platform-capacity`` ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec

from domain.kernel.clock import SHANGHAI
from sandbox.his.seed import (
    TITLE_NAMES,
    AppointmentRec,
    BillRec,
    DepartmentRec,
    Directory,
    DoctorRec,
    HospitalInfo,
    PatientRec,
    SessionRec,
    SlotRec,
)

FHIR_JSON = "application/fhir+json"

HOSPITAL = "urn:hsp:hospital"
DEPARTMENT = "urn:hsp:department"
PRACTITIONER = "urn:hsp:practitioner"
SESSION = "urn:hsp:session"
PATID = "urn:hsp:patid"
REQUEST_KEY = "urn:hsp:request-key"
TITLE_SYSTEM = "urn:hsp:title"
RECEIPT = "urn:hsp:receipt"
CHARGE_ITEM = "urn:hsp:charge-item"
FEE_CATEGORY = "urn:hsp:fee-category"
SETTLEMENT_REFUSAL = "urn:hsp:settlement-refusal"
INVOICE_ROLE = "urn:hsp:invoice-role"

DEFAULT_COUNT = 50
MAX_COUNT = 1000

Resource = dict[str, Any]


class FhirError(Exception):
    """An error answered as an ``OperationOutcome`` (issue type ``code``, optionally a ``details`` coding of
    ``detail_system``) with HTTP ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        headers: dict[str, str] | None = None,
        detail_code: str | None = None,
        detail_system: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {diagnostics}")
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = headers or {}
        self.detail_code = detail_code
        self.detail_system = detail_system

    def outcome(self) -> Resource:
        return operation_outcome(
            self.code, self.diagnostics, detail_code=self.detail_code, detail_system=self.detail_system
        )


def operation_outcome(
    code: str,
    diagnostics: str,
    severity: str = "error",
    *,
    detail_code: str | None = None,
    detail_system: str | None = None,
) -> Resource:
    issue: Resource = {"severity": severity, "code": code}
    if detail_code is not None:
        coding: Resource = {"code": detail_code}
        if detail_system is not None:
            coding = {"system": detail_system, **coding}
        issue["details"] = {"coding": [coding], "text": diagnostics}
    issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def instant(moment: datetime) -> str:
    """An instant as ISO-8601 with its offset, in China Standard Time."""
    return moment.astimezone(SHANGHAI).isoformat()


def parse_instant(text: str) -> datetime:
    """An instant or a date (midnight in China); an unencoded ``+`` of the offset may arrive as a space."""
    value = text.strip().replace(" ", "+")
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=SHANGHAI)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FhirError(400, "invalid", f"bad date or instant {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=SHANGHAI)


def decode_resource(body: bytes, resource_type: str) -> Resource:
    """The request body as a resource of the given type (400 ``structure`` otherwise)."""
    try:
        resource = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError as exc:
        raise FhirError(400, "structure", f"body is not JSON: {exc}") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise FhirError(400, "structure", f"body must be a {resource_type} resource")
    return resource


def encode(resource: Resource) -> bytes:
    return msgspec.json.encode(resource)


def decode_parameters(body: bytes) -> Resource:
    """A ``Parameters`` body with its decimals read as ``Decimal`` (money is compared exactly)."""
    try:
        resource = json.loads(body, parse_float=Decimal) if body.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirError(400, "structure", f"body is not JSON: {exc}") from None
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise FhirError(400, "structure", "body must be a Parameters resource")
    return resource


def parameter(parameters: Resource, name: str, kind: str) -> Any:
    """The ``value<kind>`` of the named parameter (None when absent); 400 when it has another value type."""
    for item in parameters.get("parameter") or ():
        if isinstance(item, dict) and item.get("name") == name:
            key = f"value{kind}"
            if key not in item:
                raise FhirError(400, "invalid", f"parameter {name!r} must carry {key}")
            return item[key]
    return None


def yuan(fen: int) -> float | int:
    """Fen as the JSON number of a FHIR decimal in yuan: the nearest float of ``fen / 100`` prints exactly."""
    return fen // 100 if fen % 100 == 0 else fen / 100


def fen_of(money: Any, where: str) -> int:
    """A ``Money`` (decoded with ``Decimal``) in CNY with at most two decimals, as fen; 400 otherwise."""
    if not isinstance(money, dict):
        raise FhirError(400, "invalid", f"{where} must be a Money")
    value = money.get("value")
    if money.get("currency", "CNY") != "CNY" or isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise FhirError(400, "invalid", f"{where} must be a CNY amount")
    fen = Decimal(value) * 100
    if fen != fen.to_integral_value():
        raise FhirError(400, "invalid", f"{where} has more than two decimals")
    return int(fen)


def meta(version: int, last_updated: datetime) -> Resource:
    return {"versionId": str(version), "lastUpdated": instant(last_updated)}


def identifier(system: str, value: str) -> Resource:
    return {"system": system, "value": value}


def extension(name: str, **value: Any) -> Resource:
    """``extension(name, valueCode="x")`` -> ``{"url": name, "valueCode": "x"}``."""
    return {"url": name, **value}


def extension_value(resource: Any, name: str) -> Any:
    """The ``value[x]`` of the resource's extension ``name`` (None when absent)."""
    if not isinstance(resource, dict):
        return None
    for item in resource.get("extension") or ():
        if isinstance(item, dict) and item.get("url") == name:
            return next((v for k, v in item.items() if k.startswith("value")), None)
    return None


# --- search parameters -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """The query string of a FHIR request, order and repeats kept."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, raw: str) -> Query:
        return cls(tuple(parse_qsl(raw, keep_blank_values=True)))

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def first(self, name: str) -> str | None:
        return next((value for key, value in self.pairs if key == name), None)

    def number(self, name: str, default: int, maximum: int) -> int:
        raw = self.first(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise FhirError(400, "invalid", f"{name} must be an integer") from None
        if value < 0:
            raise FhirError(400, "invalid", f"{name} must not be negative")
        return min(value, maximum)

    @property
    def count(self) -> int:
        return self.number("_count", DEFAULT_COUNT, MAX_COUNT)

    @property
    def offset(self) -> int:
        return self.number("_offset", 0, 10**9)

    def with_offset(self, offset: int) -> str:
        kept = [(key, value) for key, value in self.pairs if key != "_offset"]
        return urlencode([*kept, ("_offset", str(offset))])


def tokens(query: Query, name: str) -> list[tuple[str | None, str]]:
    """The ``system|code`` tokens of a parameter, comma-separated values or repeats (OR)."""
    found: list[tuple[str | None, str]] = []
    for raw in query.all(name):
        for part in raw.split(","):
            system, bar, code = part.partition("|")
            found.append((system, code) if bar else (None, part))
    return found


def token_matches(wanted: list[tuple[str | None, str]], system: str, value: str) -> bool:
    return any((s is None or s == system) and c == value for s, c in wanted)


def references(query: Query, name: str, resource_type: str) -> list[str]:
    """Ids named by a reference parameter (``Type/id`` or a bare id), comma-separated values (OR)."""
    ids: list[str] = []
    for raw in query.all(name):
        for part in raw.split(","):
            kind, slash, ident = part.rpartition("/")
            if not slash:
                ids.append(part)
            elif kind.endswith(resource_type):
                ids.append(ident)
    return ids


_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


def date_filter(values: Sequence[str]) -> list[tuple[str, date | datetime]]:
    """``date=ge2025-03-01&date=le2025-03-14`` -> [("ge", date), ("le", date)] (instants for date-times)."""
    criteria: list[tuple[str, date | datetime]] = []
    for raw in values:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in _PREFIXES else ("eq", raw)
        criteria.append((prefix, parse_instant(value) if len(value.strip()) > 10 else _date(value)))
    return criteria


def instant_filter(values: Sequence[str]) -> list[tuple[str, datetime]]:
    """``_lastUpdated=gt2025-03-01T08:00:00+08:00`` -> [("gt", instant)] (a date means its midnight in China)."""
    return [(raw[:2], parse_instant(raw[2:])) if raw[:2] in _PREFIXES else ("eq", parse_instant(raw)) for raw in values]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise FhirError(400, "invalid", f"bad date {text!r}") from None


def compare(prefix: str, actual: Any, wanted: Any) -> bool:
    match prefix:
        case "eq":
            return bool(actual == wanted)
        case "ne":
            return bool(actual != wanted)
        case "gt" | "sa":
            return bool(actual > wanted)
        case "lt" | "eb":
            return bool(actual < wanted)
        case "ge":
            return bool(actual >= wanted)
        case "le":
            return bool(actual <= wanted)
    raise FhirError(400, "invalid", f"unsupported prefix {prefix!r}")


def session_matches_dates(session: SessionRec, criteria: Iterable[tuple[str, date | datetime]]) -> bool:
    """Dates compare with the session's day in China, instants with the start of its planning horizon."""
    for prefix, wanted in criteria:
        actual: date | datetime = session.start if isinstance(wanted, datetime) else session.day
        if not compare(prefix, actual, wanted):
            return False
    return True


# --- bundles -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    resource: Resource
    mode: str = "match"


def searchset(entries: Sequence[Entry], *, total: int, base: str, self_url: str, next_url: str | None) -> Resource:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{e.resource['resourceType']}/{e.resource['id']}",
                "resource": e.resource,
                "search": {"mode": e.mode},
            }
            for e in entries
        ],
    }


def history(resources: Sequence[Resource], *, bundle_id: str, base: str, now: datetime) -> Resource:
    """What the rest-hook subscription posts: the changed resources as a ``history`` Bundle."""
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "history",
        "timestamp": instant(now),
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                "response": {
                    "status": "200",
                    "etag": f'W/"{r["meta"]["versionId"]}"',
                    "lastModified": r["meta"]["lastUpdated"],
                },
            }
            for r in resources
        ],
    }


# --- directory resources -----------------------------------------------------------------------------------


def organization(info: HospitalInfo, *, active: bool = True) -> Resource:
    return {
        "resourceType": "Organization",
        "id": info.code,
        "extension": [extension("level", valueCode=info.level.value)],
        "identifier": [identifier(HOSPITAL, info.code)],
        "active": active,
        "type": [{"text": f"{info.grade}{info.kind}"}],
        "name": info.name,
        "telecom": [{"system": "phone", "value": info.phone, "use": "work"}],
        "address": [
            {"use": "work", "text": info.address, "city": "云岭市", "district": info.district, "country": "CN"}
        ],
    }


def _department_reference(department: DepartmentRec) -> Resource:
    return {
        "reference": f"HealthcareService/{department.code}",
        "identifier": identifier(DEPARTMENT, department.code),
        "display": department.name,
    }


def healthcare_service(department: DepartmentRec, info: HospitalInfo) -> Resource:
    resource: Resource = {"resourceType": "HealthcareService", "id": department.code}
    if department.parent is not None:
        resource["extension"] = [extension("parent", valueString=department.parent)]
    resource |= {
        "identifier": [identifier(DEPARTMENT, department.code)],
        "active": True,
        "providedBy": {"reference": f"Organization/{info.code}", "display": info.name},
        "name": department.name,
        "comment": department.description,
    }
    return resource


def practitioner(doctor: DoctorRec) -> Resource:
    return {
        "resourceType": "Practitioner",
        "id": doctor.code,
        "identifier": [identifier(PRACTITIONER, doctor.code)],
        "active": True,
        "name": [{"text": doctor.name, "family": doctor.family, "given": [doctor.given]}],
        "gender": doctor.gender,
    }


def _doctor_reference(doctor: DoctorRec) -> Resource:
    return {
        "reference": f"PractitionerRole/{doctor.code}",
        "identifier": identifier(PRACTITIONER, doctor.code),
        "display": doctor.name,
    }


def practitioner_role(doctor: DoctorRec, directory: Directory) -> Resource:
    department = directory.department(doctor.department_code)
    return {
        "resourceType": "PractitionerRole",
        "id": doctor.code,
        "extension": [extension("introduction", valueString=doctor.introduction)],
        "identifier": [identifier(PRACTITIONER, doctor.code)],
        "active": not doctor.on_leave,
        "practitioner": {
            "reference": f"Practitioner/{doctor.code}",
            "identifier": identifier(PRACTITIONER, doctor.code),
            "display": doctor.name,
        },
        "organization": {"reference": f"Organization/{directory.hospital.code}"},
        "code": [
            {
                "coding": [{"system": TITLE_SYSTEM, "code": doctor.title.value, "display": TITLE_NAMES[doctor.title]}],
                "text": TITLE_NAMES[doctor.title],
            }
        ],
        "specialty": [{"text": text} for text in doctor.specialties],
        "healthcareService": [_department_reference(department)] if department else [],
    }


# --- scheduling resources ----------------------------------------------------------------------------------


def schedule(session: SessionRec, directory: Directory) -> Resource:
    department = directory.department(session.department_code)
    doctor = directory.doctor(session.doctor_code) if session.doctor_code else None
    extensions = [
        extension("period", valueCode=session.period.value),
        extension("fee", valueMoney={"value": session.fee, "currency": "CNY"}),
    ]
    if not session.active:
        extensions.append(extension("stop-reason", valueString=session.stop_reason or "停诊"))
    actors = [_department_reference(department)] if department else []
    if doctor is not None:
        actors.append(_doctor_reference(doctor))
    return {
        "resourceType": "Schedule",
        "id": session.id,
        "meta": meta(session.version, session.last_updated),
        "extension": extensions,
        "identifier": [identifier(SESSION, session.id)],
        "active": session.active,
        "serviceType": [{"text": "专家门诊" if doctor is not None else "普通门诊"}],
        "actor": actors,
        "planningHorizon": {"start": instant(session.start), "end": instant(session.end)},
    }


def slot_status(slot: SlotRec, session: SessionRec) -> str:
    if not session.active:
        return "busy-unavailable"
    return "busy" if slot.booked >= slot.capacity else "free"


def slot(record: SlotRec, session: SessionRec) -> Resource:
    return {
        "resourceType": "Slot",
        "id": record.id,
        "meta": meta(record.version, record.last_updated or session.last_updated),
        "extension": [
            extension("platform-capacity", valueInteger=record.capacity),
            extension("platform-booked", valueInteger=record.booked),
            extension("onsite-capacity", valueInteger=record.onsite),
        ],
        "schedule": {"reference": f"Schedule/{session.id}"},
        "status": slot_status(record, session),
        "start": instant(record.start),
        "end": instant(record.end),
        "overbooked": record.booked > record.capacity,
    }


def appointment(
    record: AppointmentRec,
    slot_record: SlotRec,
    session: SessionRec,
    directory: Directory,
    *,
    queue: tuple[int, int | None] | None = None,
) -> Resource:
    """``queue`` is (how many are ahead, the number being seen) for a registration."""
    extensions: list[Resource] = []
    if record.status == "proposed" and record.lock_expires is not None:
        extensions.append(extension("lock-expires", valueInstant=instant(record.lock_expires)))
    if record.queue_number is not None:
        extensions.append(extension("queue-number", valueInteger=record.queue_number))
    if queue is not None:
        ahead, current = queue
        extensions.append(extension("queue-ahead", valueInteger=ahead))
        if current is not None:
            extensions.append(extension("queue-current", valueInteger=current))
    participants: list[Resource] = [
        {
            "actor": {"reference": f"Patient/{record.patid}", "identifier": identifier(PATID, record.patid)},
            "status": "accepted",
        }
    ]
    doctor = directory.doctor(session.doctor_code) if session.doctor_code else None
    if doctor is not None:
        participants.append({"actor": _doctor_reference(doctor), "status": "accepted"})
    department = directory.department(session.department_code)
    if department is not None:
        participants.append({"actor": _department_reference(department), "status": "accepted"})
    resource: Resource = {
        "resourceType": "Appointment",
        "id": record.id,
        "meta": meta(record.version, record.last_updated),
    }
    if extensions:
        resource["extension"] = extensions
    if record.key is not None:
        resource["identifier"] = [identifier(REQUEST_KEY, record.key)]
    resource |= {
        "status": record.status,
        "start": instant(slot_record.start),
        "end": instant(slot_record.end),
        "created": instant(record.created),
        "slot": [{"reference": f"Slot/{slot_record.id}"}],
        "participant": participants,
    }
    if record.cancel_reason is not None:
        resource["cancelationReason"] = {"text": record.cancel_reason}
    return resource


def patient(record: PatientRec) -> Resource:
    return dict(record.resource)


# --- billing -----------------------------------------------------------------------------------------------


def invoice(record: BillRec, directory: Directory) -> Resource:
    """An outpatient bill: ``issued`` (unpaid), ``balanced`` with its receipt and ``settled-at``, or
    ``cancelled``; each line one ``base`` price component (``factor`` the quantity, ``amount`` the line)."""
    department = directory.department(record.department_code)
    doctor = directory.doctor(record.doctor_code) if record.doctor_code else None
    resource: Resource = {"resourceType": "Invoice", "id": record.id, "meta": meta(record.version, record.last_updated)}
    if record.settled_at is not None:
        resource["extension"] = [extension("settled-at", valueInstant=instant(record.settled_at))]
    identifiers = [identifier(RECEIPT, record.receipt_no)] if record.receipt_no else []
    if identifiers:
        resource["identifier"] = identifiers
    total = {"value": yuan(record.total_fen), "currency": "CNY"}
    resource |= {
        "status": record.status,
        "type": {"text": record.title},
        "subject": {"reference": f"Patient/{record.patid}", "identifier": identifier(PATID, record.patid)},
        "date": instant(record.issued_at),
    }
    if record.cancel_reason is not None:
        resource["cancelledReason"] = record.cancel_reason
    if doctor is not None:
        resource["participant"] = [
            {
                "role": {"coding": [{"system": INVOICE_ROLE, "code": "orderer", "display": "开单医生"}]},
                "actor": {
                    "reference": f"Practitioner/{doctor.code}",
                    "identifier": identifier(PRACTITIONER, doctor.code),
                    "display": doctor.name,
                },
            }
        ]
    if department is not None:
        resource["issuer"] = {"identifier": identifier(DEPARTMENT, department.code), "display": department.name}
    resource |= {
        "lineItem": [
            {
                "sequence": n,
                "chargeItemCodeableConcept": {
                    "coding": [
                        {"system": CHARGE_ITEM, "code": item.code, "display": item.name},
                        {"system": FEE_CATEGORY, "code": item.category_code, "display": item.category},
                    ],
                    "text": item.name,
                },
                "priceComponent": [
                    {
                        "type": "base",
                        "factor": item.quantity,
                        "amount": {"value": yuan(item.amount_fen), "currency": "CNY"},
                    }
                ],
            }
            for n, item in enumerate(record.items, 1)
        ],
        "totalNet": total,
        "totalGross": dict(total),
    }
    return resource


def capability_statement(now: datetime) -> Resource:
    types = ("Organization", "HealthcareService", "Practitioner", "PractitionerRole", "Schedule", "Slot")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(now),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    *({"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}]} for t in types),
                    {
                        "type": "Appointment",
                        "interaction": [{"code": "read"}, {"code": "create"}, {"code": "update"}],
                    },
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "create"}],
                        "conditionalCreate": True,
                    },
                    {"type": "Invoice", "interaction": [{"code": "read"}, {"code": "search-type"}]},
                ],
                "operation": [
                    {"name": "stop", "definition": "Schedule/$stop"},
                    {"name": "settle", "definition": "Invoice/$settle"},
                ],
            }
        ],
    }
