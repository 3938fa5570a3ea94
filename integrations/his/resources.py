"""Tolerant reading of the FHIR R4 resources the HIS adapter uses (docs/his-fhir-profile.md).

Each ``parse_*`` takes a decoded JSON object and returns a small frozen structure. Unknown elements and
extensions are ignored (FHIR R4 §2.1.0.2 "must ignore" for elements we do not understand); the elements we use
are checked strictly (type, presence where R4 or our profile requires them) and a breach raises
``FhirParseError`` naming the element. The ``to_*`` functions turn the structures into domain values and
check what only our profile requires (our identifier systems, extensions, titles).

JSON must be decoded with ``loads`` (decimals as ``Decimal``): FHIR ``decimal`` values such as money are never
read through binary floats.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from domain.billing.model import BillItem, BillStatus, OutpatientBill, bill_title
from domain.catalogue.model import (
    Department,
    Doctor,
    DoctorTitle,
    HospitalLevel,
    Period,
    ScheduleSession,
    SessionStatus,
    Slot,
)
from domain.kernel.clock import SHANGHAI
from domain.kernel.errors import ValidationError
from domain.kernel.money import yuan_to_fen

HOSPITAL_SYSTEM = "urn:hsp:hospital"
DEPARTMENT_SYSTEM = "urn:hsp:department"
PRACTITIONER_SYSTEM = "urn:hsp:practitioner"
SESSION_SYSTEM = "urn:hsp:session"
PATID_SYSTEM = "urn:hsp:patid"
REQUEST_KEY_SYSTEM = "urn:hsp:request-key"
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
"""居民身份证 (CV02.01.101 code 01)."""
ID_TYPE_SYSTEM_PREFIX = "urn:hsp:id-type:"
RECEIPT_SYSTEM = "urn:hsp:receipt"
"""The HIS's receipt number (收据号) of a settled Invoice."""
CHARGE_ITEM_SYSTEM = "urn:hsp:charge-item"
FEE_CATEGORY_SYSTEM = "urn:hsp:fee-category"
SETTLEMENT_REFUSAL_SYSTEM = "urn:hsp:settlement-refusal"
"""``OperationOutcome.issue.details.coding`` of a refused ``$settle``."""

SLOT_STATUSES = frozenset({"free", "busy", "busy-unavailable", "busy-tentative", "entered-in-error"})
"""R4 SlotStatus (required binding)."""
APPOINTMENT_STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
"""R4 AppointmentStatus (required binding)."""

JsonObject = Mapping[str, Any]


class FhirParseError(ValueError):
    """A resource breaks R4 or our profile in an element we use. The message names the element, never its
    value (values may be personal data)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def loads(data: bytes | str) -> Any:
    """Decode FHIR JSON with decimals as ``Decimal`` (never floats)."""
    try:
        return json.loads(data, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirParseError("body", "not JSON") from exc


# --- primitive readers -------------------------------------------------------------------------------------


def _object(value: Any, where: str) -> JsonObject:
    if not isinstance(value, Mapping):
        raise FhirParseError(where, "must be a JSON object")
    return value


def _list(raw: JsonObject, key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FhirParseError(f"{where}.{key}", "must be an array")
    return value


def _string(raw: JsonObject, key: str, where: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise FhirParseError(f"{where}.{key}", "is required")
        return None
    if not isinstance(value, str):
        raise FhirParseError(f"{where}.{key}", "must be a string")
    if required and not value.strip():
        raise FhirParseError(f"{where}.{key}", "must not be empty")
    return value


def _required(raw: JsonObject, key: str, where: str) -> str:
    value = _string(raw, key, where, required=True)
    assert value is not None
    return value


def _boolean(raw: JsonObject, key: str, where: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise FhirParseError(f"{where}.{key}", "must be a boolean")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FhirParseError(where, "must be an integer")
    return value


def parse_instant(text: str, where: str) -> datetime:
    """An R4 ``instant`` (or a ``dateTime`` with a time): it must carry its offset; returned as aware UTC."""
    value = text.strip()
    if len(value) <= 10 or "T" not in value:
        raise FhirParseError(where, "must be an instant with a time and an offset")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirParseError(where, "is not an instant") from None
    if parsed.tzinfo is None:
        raise FhirParseError(where, "must carry a time-zone offset")
    return parsed.astimezone(UTC)


def parse_date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise FhirParseError(where, "is not a date (YYYY-MM-DD)") from None


def _instant(raw: JsonObject, key: str, where: str) -> datetime:
    """A required instant element."""
    return parse_instant(_required(raw, key, where), f"{where}.{key}")


# --- data types --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identifier:
    system: str | None
    value: str

    def __repr__(self) -> str:  # identifiers may be personal data: keep them out of logs and tracebacks
        return f"Identifier(system={self.system!r}, value=<{len(self.value)} chars>)"


def parse_identifier(raw: Any, where: str) -> Identifier:
    obj = _object(raw, where)
    return Identifier(system=_string(obj, "system", where), value=_required(obj, "value", where))


def _identifiers(raw: JsonObject, where: str) -> tuple[Identifier, ...]:
    return tuple(
        parse_identifier(item, f"{where}.identifier[{i}]") for i, item in enumerate(_list(raw, "identifier", where))
    )


def identifier_value(identifiers: Iterable[Identifier], system: str) -> str | None:
    return next((i.value for i in identifiers if i.system == system), None)


@dataclass(frozen=True, slots=True)
class Reference:
    reference: str | None
    identifier: Identifier | None = None
    display: str | None = None

    def id_of(self, resource_type: str) -> str | None:
        """The logical id of a relative (``Type/id``) or absolute (``.../Type/id``) literal reference."""
        if not self.reference:
            return None
        parts = self.reference.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
            return parts[-1]
        return None

    def logical(self, system: str) -> str | None:
        """The value of a logical reference (``Reference.identifier``) in the given system."""
        if self.identifier is not None and self.identifier.system == system:
            return self.identifier.value
        return None


def parse_reference(raw: Any, where: str) -> Reference:
    obj = _object(raw, where)
    ident = obj.get("identifier")
    return Reference(
        reference=_string(obj, "reference", where),
        identifier=None if ident is None else parse_identifier(ident, f"{where}.identifier"),
        display=_string(obj, "display", where),
    )


def _references(raw: JsonObject, key: str, where: str) -> tuple[Reference, ...]:
    return tuple(parse_reference(item, f"{where}.{key}[{i}]") for i, item in enumerate(_list(raw, key, where)))


@dataclass(frozen=True, slots=True)
class Money:
    value: Decimal
    currency: str | None

    def to_fen(self, where: str = "Money") -> int:
        """Integer fen, exactly: CNY with at most two decimals (DESIGN D3), else ``FhirParseError``."""
        if self.currency not in (None, "CNY"):
            raise FhirParseError(f"{where}.currency", "must be CNY")
        text = format(self.value, "f")
        try:
            return yuan_to_fen(text)
        except ValidationError:
            raise FhirParseError(f"{where}.value", "must be a yuan amount with at most two decimals") from None


def parse_money(raw: Any, where: str) -> Money:
    obj = _object(raw, where)
    value = obj.get("value")
    if value is None:
        raise FhirParseError(f"{where}.value", "is required")
    if isinstance(value, float):
        raise FhirParseError(f"{where}.value", "must be decoded as a decimal, never a binary float")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise FhirParseError(f"{where}.value", "must be a number")
    if isinstance(value, Decimal) and not value.is_finite():
        raise FhirParseError(f"{where}.value", "must be finite")
    return Money(value=Decimal(value), currency=_string(obj, "currency", where))


@dataclass(frozen=True, slots=True)
class Extensions:
    """A resource's (or element's) extensions by ``url``. Our profile names them bare (``level``); a HIS that
    uses canonical URLs (``.../StructureDefinition/level``) is matched on the last path segment."""

    items: tuple[tuple[str, JsonObject], ...] = ()

    def _find(self, name: str) -> JsonObject | None:
        for url, item in self.items:
            if url == name or url.rsplit("/", 1)[-1] == name or url.rsplit(":", 1)[-1] == name:
                return item
        return None

    def value(self, name: str, kind: str, where: str) -> Any:
        """``value<kind>`` of extension ``name``; None when the extension is absent; an error when present with
        another value type."""
        item = self._find(name)
        if item is None:
            return None
        key = f"value{kind}"
        if key not in item:
            raise FhirParseError(f"{where}.extension[{name}]", f"must carry {key}")
        return item[key]

    def string(self, name: str, where: str) -> str | None:
        value = self.value(name, "String", where)
        if value is not None and not isinstance(value, str):
            raise FhirParseError(f"{where}.extension[{name}]", "valueString must be a string")
        return value

    def code(self, name: str, where: str) -> str | None:
        value = self.value(name, "Code", where)
        if value is not None and not isinstance(value, str):
            raise FhirParseError(f"{where}.extension[{name}]", "valueCode must be a string")
        return value

    def integer(self, name: str, where: str) -> int | None:
        value = self.value(name, "Integer", where)
        return None if value is None else _integer(value, f"{where}.extension[{name}].valueInteger")

    def instant(self, name: str, where: str) -> datetime | None:
        value = self.value(name, "Instant", where)
        if value is None:
            return None
        if not isinstance(value, str):
            raise FhirParseError(f"{where}.extension[{name}]", "valueInstant must be a string")
        return parse_instant(value, f"{where}.extension[{name}].valueInstant")

    def money(self, name: str, where: str) -> Money | None:
        value = self.value(name, "Money", where)
        return None if value is None else parse_money(value, f"{where}.extension[{name}].valueMoney")

    def identifier(self, name: str, where: str) -> Identifier | None:
        value = self.value(name, "Identifier", where)
        return None if value is None else parse_identifier(value, f"{where}.extension[{name}].valueIdentifier")


def parse_extensions(raw: JsonObject, where: str) -> Extensions:
    items: list[tuple[str, JsonObject]] = []
    for i, item in enumerate(_list(raw, "extension", where)):
        obj = _object(item, f"{where}.extension[{i}]")
        items.append((_required(obj, "url", f"{where}.extension[{i}]"), obj))
    return Extensions(tuple(items))


def _codeable_text(raw: Any, where: str) -> str | None:
    """``CodeableConcept.text``, else the first coding's display."""
    obj = _object(raw, where)
    text = _string(obj, "text", where)
    if text:
        return text
    for i, coding in enumerate(_list(obj, "coding", where)):
        display = _string(_object(coding, f"{where}.coding[{i}]"), "display", f"{where}.coding[{i}]")
        if display:
            return display
    return None


def _first_code(raw: Any, where: str) -> str | None:
    """``CodeableConcept.coding[0].code``."""
    obj = _object(raw, where)
    codings = _list(obj, "coding", where)
    if not codings:
        return None
    return _string(_object(codings[0], f"{where}.coding[0]"), "code", f"{where}.coding[0]")


def _resource(raw: Any, resource_type: str) -> JsonObject:
    obj = _object(raw, resource_type)
    actual = obj.get("resourceType")
    if actual != resource_type:
        raise FhirParseError(f"{resource_type}.resourceType", f"expected {resource_type}")
    return obj


def _address_text(raw: JsonObject, where: str) -> str:
    """``Address.text``, else its lines and city joined."""
    text = _string(raw, "text", where)
    if text:
        return text
    lines = [str(line) for line in _list(raw, "line", where) if isinstance(line, str)]
    city = _string(raw, "city", where)
    return ", ".join([*lines, *([city] if city else [])])


def _telecom(raw: JsonObject, system: str, where: str) -> str:
    for i, item in enumerate(_list(raw, "telecom", where)):
        obj = _object(item, f"{where}.telecom[{i}]")
        if obj.get("system") == system:
            return _string(obj, "value", f"{where}.telecom[{i}]") or ""
    return ""


# --- resources ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FhirOrganization:
    id: str | None
    identifiers: tuple[Identifier, ...]
    name: str
    level: HospitalLevel | None
    address: str
    phone: str
    active: bool

    @property
    def hospital_code(self) -> str | None:
        return identifier_value(self.identifiers, HOSPITAL_SYSTEM)


def parse_organization(raw: Any) -> FhirOrganization:
    """R4 Organization: ``name`` is what we use (org-1 requires a name or an identifier; we need the name)."""
    where = "Organization"
    obj = _resource(raw, where)
    level_code = parse_extensions(obj, where).code("level", where)
    level: HospitalLevel | None = None
    if level_code is not None:
        try:
            level = HospitalLevel(level_code)
        except ValueError:
            raise FhirParseError(f"{where}.extension[level]", "must be primary, secondary or tertiary") from None
    addresses = _list(obj, "address", where)
    return FhirOrganization(
        id=_string(obj, "id", where),
        identifiers=_identifiers(obj, where),
        name=_required(obj, "name", where),
        level=level,
        address=_address_text(_object(addresses[0], f"{where}.address[0]"), f"{where}.address[0]") if addresses else "",
        phone=_telecom(obj, "phone", where),
        active=_boolean(obj, "active", where, True),
    )


@dataclass(frozen=True, slots=True)
class FhirLocation:
    id: str | None
    identifiers: tuple[Identifier, ...]
    name: str | None
    status: str | None
    address: str


def parse_location(raw: Any) -> FhirLocation:
    where = "Location"
    obj = _resource(raw, where)
    address = obj.get("address")
    return FhirLocation(
        id=_string(obj, "id", where),
        identifiers=_identifiers(obj, where),
        name=_string(obj, "name", where),
        status=_string(obj, "status", where),
        address="" if address is None else _address_text(_object(address, f"{where}.address"), f"{where}.address"),
    )


@dataclass(frozen=True, slots=True)
class FhirHealthcareService:
    id: str
    identifiers: tuple[Identifier, ...]
    name: str
    comment: str
    parent_code: str | None
    active: bool

    @property
    def department_code(self) -> str | None:
        return identifier_value(self.identifiers, DEPARTMENT_SYSTEM)


def parse_healthcare_service(raw: Any) -> FhirHealthcareService:
    where = "HealthcareService"
    obj = _resource(raw, where)
    return FhirHealthcareService(
        id=_required(obj, "id", where),
        identifiers=_identifiers(obj, where),
        name=_required(obj, "name", where),
        comment=_string(obj, "comment", where) or "",
        parent_code=parse_extensions(obj, where).string("parent", where),
        active=_boolean(obj, "active", where, True),
    )


def to_department(service: FhirHealthcareService, hospital_code: str) -> Department:
    code = service.department_code
    if not code:
        raise FhirParseError("HealthcareService.identifier", f"no {DEPARTMENT_SYSTEM} identifier")
    return Department(
        hospital_code=hospital_code,
        code=code,
        name=service.name,
        parent_code=service.parent_code or None,
        description=service.comment,
    )


def _human_name(raw: Any, where: str) -> str:
    """``HumanName.text``; else family and given names (joined without a space when Chinese)."""
    obj = _object(raw, where)
    text = _string(obj, "text", where)
    if text and text.strip():
        return text.strip()
    family = _string(obj, "family", where) or ""
    given = [g for g in _list(obj, "given", where) if isinstance(g, str)]
    if any("\u4e00" <= ch <= "\u9fff" for ch in family + "".join(given)):
        return family + "".join(given)
    return " ".join([*given, family]).strip()


@dataclass(frozen=True, slots=True)
class FhirPractitioner:
    id: str
    identifiers: tuple[Identifier, ...]
    name: str
    active: bool

    @property
    def practitioner_code(self) -> str | None:
        return identifier_value(self.identifiers, PRACTITIONER_SYSTEM)


def parse_practitioner(raw: Any) -> FhirPractitioner:
    where = "Practitioner"
    obj = _resource(raw, where)
    names = _list(obj, "name", where)
    if not names:
        raise FhirParseError(f"{where}.name", "is required")
    name = _human_name(names[0], f"{where}.name[0]")
    if not name:
        raise FhirParseError(f"{where}.name[0]", "has neither text nor family/given")
    return FhirPractitioner(
        id=_required(obj, "id", where),
        identifiers=_identifiers(obj, where),
        name=name,
        active=_boolean(obj, "active", where, True),
    )


@dataclass(frozen=True, slots=True)
class FhirPractitionerRole:
    id: str
    identifiers: tuple[Identifier, ...]
    active: bool
    practitioner: Reference | None
    healthcare_services: tuple[Reference, ...]
    title_code: str | None
    specialties: tuple[str, ...]
    introduction: str


def parse_practitioner_role(raw: Any) -> FhirPractitionerRole:
    where = "PractitionerRole"
    obj = _resource(raw, where)
    codes = _list(obj, "code", where)
    practitioner = obj.get("practitioner")
    specialties = tuple(
        text
        for i, item in enumerate(_list(obj, "specialty", where))
        if (text := _codeable_text(item, f"{where}.specialty[{i}]"))
    )
    return FhirPractitionerRole(
        id=_required(obj, "id", where),
        identifiers=_identifiers(obj, where),
        active=_boolean(obj, "active", where, True),
        practitioner=None if practitioner is None else parse_reference(practitioner, f"{where}.practitioner"),
        healthcare_services=_references(obj, "healthcareService", where),
        title_code=_first_code(codes[0], f"{where}.code[0]") if codes else None,
        specialties=specialties,
        introduction=parse_extensions(obj, where).string("introduction", where) or "",
    )


def to_doctor(
    role: FhirPractitionerRole,
    practitioner: FhirPractitioner | None,
    hospital_code: str,
    department_of: Mapping[str, str],
) -> Doctor:
    """The doctor of a PractitionerRole and its Practitioner. ``department_of`` maps HealthcareService ids to
    department codes, for references that are literal only."""
    where = "PractitionerRole"
    code = practitioner.practitioner_code if practitioner else None
    if not code and role.practitioner is not None:
        code = role.practitioner.logical(PRACTITIONER_SYSTEM)
    if not code:
        raise FhirParseError(f"{where}.practitioner", f"no {PRACTITIONER_SYSTEM} identifier")
    name = practitioner.name if practitioner else (role.practitioner.display if role.practitioner else None)
    if not name:
        raise FhirParseError(f"{where}.practitioner", "no Practitioner name")
    try:
        title = DoctorTitle(role.title_code or "")
    except ValueError:
        raise FhirParseError(f"{where}.code[0]", "is not a doctor title of the profile") from None
    departments: list[str] = []
    for i, ref in enumerate(role.healthcare_services):
        dept = ref.logical(DEPARTMENT_SYSTEM)
        if dept is None:
            service_id = ref.id_of("HealthcareService")
            dept = department_of.get(service_id) if service_id else None
        if dept is None:
            raise FhirParseError(f"{where}.healthcareService[{i}]", "names no known department")
        if dept not in departments:
            departments.append(dept)
    return Doctor(
        hospital_code=hospital_code,
        code=code,
        name=name,
        title=title,
        department_codes=tuple(departments),
        specialties=role.specialties,
        introduction=role.introduction,
        on_leave=not role.active,
    )


@dataclass(frozen=True, slots=True)
class FhirSchedule:
    id: str | None
    identifiers: tuple[Identifier, ...]
    active: bool
    actors: tuple[Reference, ...]
    start: datetime
    end: datetime
    period: str | None
    fee: Money | None
    stop_reason: str | None
    version: str

    @property
    def session_id(self) -> str | None:
        return identifier_value(self.identifiers, SESSION_SYSTEM)


def _meta_version(obj: JsonObject, where: str) -> str:
    meta = obj.get("meta")
    if meta is None:
        return ""
    return _string(_object(meta, f"{where}.meta"), "versionId", f"{where}.meta") or ""


def parse_schedule(raw: Any) -> FhirSchedule:
    """R4 Schedule (``actor`` 1..*); our profile also needs an identifier and a planning horizon."""
    where = "Schedule"
    obj = _resource(raw, where)
    identifiers = _identifiers(obj, where)
    if not identifiers:
        raise FhirParseError(f"{where}.identifier", "is required (the session id)")
    actors = _references(obj, "actor", where)
    if not actors:
        raise FhirParseError(f"{where}.actor", "is required")
    horizon = obj.get("planningHorizon")
    if horizon is None:
        raise FhirParseError(f"{where}.planningHorizon", "is required")
    span = _object(horizon, f"{where}.planningHorizon")
    start = _instant(span, "start", f"{where}.planningHorizon")
    end = _instant(span, "end", f"{where}.planningHorizon")
    if end < start:
        raise FhirParseError(f"{where}.planningHorizon", "ends before it starts")
    extensions = parse_extensions(obj, where)
    return FhirSchedule(
        id=_string(obj, "id", where),
        identifiers=identifiers,
        active=_boolean(obj, "active", where, True),
        actors=actors,
        start=start,
        end=end,
        period=extensions.code("period", where),
        fee=extensions.money("fee", where),
        stop_reason=extensions.string("stop-reason", where),
        version=_meta_version(obj, where),
    )


@dataclass(frozen=True, slots=True)
class FhirSlot:
    id: str | None
    schedule: Reference
    status: str
    start: datetime
    end: datetime
    platform_capacity: int | None
    platform_booked: int | None


def parse_slot(raw: Any) -> FhirSlot:
    """R4 Slot: ``schedule``, ``status``, ``start`` and ``end`` are required (1..1)."""
    where = "Slot"
    obj = _resource(raw, where)
    schedule = obj.get("schedule")
    if schedule is None:
        raise FhirParseError(f"{where}.schedule", "is required")
    status = _required(obj, "status", where)
    if status not in SLOT_STATUSES:
        raise FhirParseError(f"{where}.status", "is not an R4 SlotStatus")
    start = _instant(obj, "start", where)
    end = _instant(obj, "end", where)
    if end < start:
        raise FhirParseError(where, "ends before it starts")
    extensions = parse_extensions(obj, where)
    capacity = extensions.integer("platform-capacity", where)
    booked = extensions.integer("platform-booked", where)
    for name, value in (("platform-capacity", capacity), ("platform-booked", booked)):
        if value is not None and value < 0:
            raise FhirParseError(f"{where}.extension[{name}]", "must not be negative")
    return FhirSlot(
        id=_string(obj, "id", where),
        schedule=parse_reference(schedule, f"{where}.schedule"),
        status=status,
        start=start,
        end=end,
        platform_capacity=capacity,
        platform_booked=booked,
    )


def to_slot(slot: FhirSlot, hospital_code: str, session_id: str) -> Slot:
    if not slot.id:
        raise FhirParseError("Slot.id", "is required")
    if slot.platform_capacity is None:
        raise FhirParseError("Slot.extension[platform-capacity]", "is required")
    return Slot(
        hospital_code=hospital_code,
        id=slot.id,
        session_id=session_id,
        start=slot.start,
        end=slot.end,
        capacity=slot.platform_capacity,
        his_booked=slot.platform_booked or 0,
    )


def to_session(
    schedule: FhirSchedule,
    slots: Sequence[FhirSlot],
    hospital_code: str,
    *,
    department_of: Mapping[str, str],
    doctor_of: Mapping[str, str],
    now: datetime | None = None,
) -> ScheduleSession:
    """The clinic session of a Schedule. Its day is the planning horizon's start in Asia/Shanghai; the
    department and doctor come from the actors' logical references (or the id maps for literal ones). A
    session whose horizon has ended by ``now`` is ``closed``."""
    where = "Schedule"
    session_id = schedule.session_id
    if not session_id:
        raise FhirParseError(f"{where}.identifier", f"no {SESSION_SYSTEM} identifier")
    department: str | None = None
    doctor: str | None = None
    for ref in schedule.actors:
        dept = ref.logical(DEPARTMENT_SYSTEM)
        if dept is None and (service_id := ref.id_of("HealthcareService")):
            dept = department_of.get(service_id)
        if dept is not None:
            department = department or dept
            continue
        doc = ref.logical(PRACTITIONER_SYSTEM)
        if doc is None and (role_id := ref.id_of("PractitionerRole")):
            doc = doctor_of.get(role_id)
        if doc is not None:
            doctor = doctor or doc
    if department is None:
        raise FhirParseError(f"{where}.actor", "names no known department (HealthcareService)")
    try:
        period = Period(schedule.period or "")
    except ValueError:
        raise FhirParseError(f"{where}.extension[period]", "must be morning, afternoon or evening") from None
    if schedule.fee is None:
        raise FhirParseError(f"{where}.extension[fee]", "is required")
    fee_fen = schedule.fee.to_fen(f"{where}.extension[fee].valueMoney")
    if fee_fen < 0:
        raise FhirParseError(f"{where}.extension[fee].valueMoney.value", "must not be negative")
    if not schedule.active:
        status = SessionStatus.STOPPED
    elif now is not None and schedule.end <= now:
        status = SessionStatus.CLOSED
    else:
        status = SessionStatus.OPEN
    return ScheduleSession(
        hospital_code=hospital_code,
        id=session_id,
        department_code=department,
        doctor_code=doctor,
        day=schedule.start.astimezone(SHANGHAI).date(),
        period=period,
        status=status,
        fee_fen=fee_fen,
        slots=tuple(sorted((to_slot(s, hospital_code, session_id) for s in slots), key=lambda s: (s.start, s.id))),
        stop_reason=(schedule.stop_reason or "停诊") if not schedule.active else None,
        version=schedule.version,
    )


@dataclass(frozen=True, slots=True)
class FhirAppointment:
    id: str
    status: str
    identifiers: tuple[Identifier, ...]
    slots: tuple[Reference, ...]
    participants: tuple[Reference, ...]
    lock_expires: datetime | None
    queue_number: int | None
    queue_ahead: int | None
    queue_current: int | None
    cancelation_reason: str | None
    version: str
    raw: JsonObject
    """The resource as received, for an update (PUT replaces the whole resource, R4 §3.1.0.4)."""

    def __repr__(self) -> str:
        return f"FhirAppointment(id={self.id!r}, status={self.status!r})"


def parse_appointment(raw: Any) -> FhirAppointment:
    """R4 Appointment: ``status`` is required; we also need the server's ``id``."""
    where = "Appointment"
    obj = _resource(raw, where)
    status = _required(obj, "status", where)
    if status not in APPOINTMENT_STATUSES:
        raise FhirParseError(f"{where}.status", "is not an R4 AppointmentStatus")
    participants: list[Reference] = []
    for i, item in enumerate(_list(obj, "participant", where)):
        actor = _object(item, f"{where}.participant[{i}]").get("actor")
        if actor is not None:
            participants.append(parse_reference(actor, f"{where}.participant[{i}].actor"))
    extensions = parse_extensions(obj, where)
    reason = obj.get("cancelationReason")
    return FhirAppointment(
        id=_required(obj, "id", where),
        status=status,
        identifiers=_identifiers(obj, where),
        slots=_references(obj, "slot", where),
        participants=tuple(participants),
        lock_expires=extensions.instant("lock-expires", where),
        queue_number=extensions.integer("queue-number", where),
        queue_ahead=extensions.integer("queue-ahead", where),
        queue_current=extensions.integer("queue-current", where),
        cancelation_reason=None if reason is None else _codeable_text(reason, f"{where}.cancelationReason"),
        version=_meta_version(obj, where),
        raw=obj,
    )


@dataclass(frozen=True, slots=True)
class FhirPatient:
    id: str | None
    identifiers: tuple[Identifier, ...]
    name: str
    gender: str | None
    birth_date: date | None

    @property
    def patid(self) -> str | None:
        return identifier_value(self.identifiers, PATID_SYSTEM)

    def __repr__(self) -> str:  # personal data stays out of logs and tracebacks
        return f"FhirPatient(id={self.id!r})"


def parse_patient(raw: Any) -> FhirPatient:
    where = "Patient"
    obj = _resource(raw, where)
    names = _list(obj, "name", where)
    birth = _string(obj, "birthDate", where)
    return FhirPatient(
        id=_string(obj, "id", where),
        identifiers=_identifiers(obj, where),
        name=_human_name(names[0], f"{where}.name[0]") if names else "",
        gender=_string(obj, "gender", where),
        birth_date=None if birth is None else parse_date(birth, f"{where}.birthDate"),
    )


# --- billing (诊间支付) ------------------------------------------------------------------------------------

INVOICE_STATUSES = frozenset({"draft", "issued", "balanced", "cancelled", "entered-in-error"})
"""R4 InvoiceStatus (required binding)."""
PRICE_COMPONENT_TYPES = frozenset({"base", "surcharge", "deduction", "discount", "tax", "informational"})
"""R4 InvoicePriceComponentType (required binding)."""
_BILL_STATUS: Mapping[str, BillStatus] = {
    "draft": BillStatus.UNPAID,
    "issued": BillStatus.UNPAID,
    "balanced": BillStatus.PAID,
    "cancelled": BillStatus.CANCELLED,
    "entered-in-error": BillStatus.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class FhirPriceComponent:
    type: str
    code: str | None
    factor: Decimal | None
    amount: Money | None


@dataclass(frozen=True, slots=True)
class FhirLineItem:
    sequence: int | None
    charge_item: JsonObject | None
    """``chargeItemCodeableConcept`` (None when the line names a ``chargeItemReference`` instead)."""
    charge_item_reference: Reference | None
    price_components: tuple[FhirPriceComponent, ...]


@dataclass(frozen=True, slots=True)
class FhirInvoice:
    id: str
    status: str
    identifiers: tuple[Identifier, ...]
    type_text: str | None
    subject: Reference | None
    date: datetime | None
    participants: tuple[tuple[str | None, Reference], ...]
    """(role code, actor) of each participant."""
    issuer: Reference | None
    line_items: tuple[FhirLineItem, ...]
    total_net: Money | None
    total_gross: Money | None
    settled_at: datetime | None
    insured: Money | None
    version: str

    @property
    def receipt_no(self) -> str | None:
        return identifier_value(self.identifiers, RECEIPT_SYSTEM)

    def __repr__(self) -> str:  # the subject is personal data: keep it out of logs and tracebacks
        return f"FhirInvoice(id={self.id!r}, status={self.status!r})"


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise FhirParseError(where, "must be decoded as a decimal, never a binary float")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise FhirParseError(where, "must be a number")
    if isinstance(value, Decimal) and not value.is_finite():
        raise FhirParseError(where, "must be finite")
    return Decimal(value)


def _optional_money(raw: JsonObject, key: str, where: str) -> Money | None:
    value = raw.get(key)
    return None if value is None else parse_money(value, f"{where}.{key}")


def _price_component(raw: Any, where: str) -> FhirPriceComponent:
    obj = _object(raw, where)
    kind = _required(obj, "type", where)
    if kind not in PRICE_COMPONENT_TYPES:
        raise FhirParseError(f"{where}.type", "is not an R4 InvoicePriceComponentType")
    code = obj.get("code")
    factor = obj.get("factor")
    return FhirPriceComponent(
        type=kind,
        code=None if code is None else _first_code(code, f"{where}.code"),
        factor=None if factor is None else _decimal(factor, f"{where}.factor"),
        amount=_optional_money(obj, "amount", where),
    )


def _line_item(raw: Any, where: str) -> FhirLineItem:
    obj = _object(raw, where)
    sequence = obj.get("sequence")
    concept = obj.get("chargeItemCodeableConcept")
    reference = obj.get("chargeItemReference")
    if concept is None and reference is None:
        raise FhirParseError(f"{where}.chargeItem[x]", "is required")
    return FhirLineItem(
        sequence=None if sequence is None else _integer(sequence, f"{where}.sequence"),
        charge_item=None if concept is None else _object(concept, f"{where}.chargeItemCodeableConcept"),
        charge_item_reference=None if reference is None else parse_reference(reference, f"{where}.chargeItemReference"),
        price_components=tuple(
            _price_component(item, f"{where}.priceComponent[{i}]")
            for i, item in enumerate(_list(obj, "priceComponent", where))
        ),
    )


def parse_invoice(raw: Any) -> FhirInvoice:
    """R4 Invoice: ``status`` is required; we also need the server's ``id`` (the bill id)."""
    where = "Invoice"
    obj = _resource(raw, where)
    status = _required(obj, "status", where)
    if status not in INVOICE_STATUSES:
        raise FhirParseError(f"{where}.status", "is not an R4 InvoiceStatus")
    participants: list[tuple[str | None, Reference]] = []
    for i, item in enumerate(_list(obj, "participant", where)):
        part = _object(item, f"{where}.participant[{i}]")
        actor = part.get("actor")
        if actor is None:
            raise FhirParseError(f"{where}.participant[{i}].actor", "is required")
        role = part.get("role")
        participants.append(
            (
                None if role is None else _first_code(role, f"{where}.participant[{i}].role"),
                parse_reference(actor, f"{where}.participant[{i}].actor"),
            )
        )
    subject = obj.get("subject")
    issuer = obj.get("issuer")
    kind = obj.get("type")
    date_text = _string(obj, "date", where)
    extensions = parse_extensions(obj, where)
    return FhirInvoice(
        id=_required(obj, "id", where),
        status=status,
        identifiers=_identifiers(obj, where),
        type_text=None if kind is None else _codeable_text(kind, f"{where}.type"),
        subject=None if subject is None else parse_reference(subject, f"{where}.subject"),
        date=None if date_text is None else parse_instant(date_text, f"{where}.date"),
        participants=tuple(participants),
        issuer=None if issuer is None else parse_reference(issuer, f"{where}.issuer"),
        line_items=tuple(
            _line_item(item, f"{where}.lineItem[{i}]") for i, item in enumerate(_list(obj, "lineItem", where))
        ),
        total_net=_optional_money(obj, "totalNet", where),
        total_gross=_optional_money(obj, "totalGross", where),
        settled_at=extensions.instant("settled-at", where),
        insured=extensions.money("insured", where),
        version=_meta_version(obj, where),
    )


def invoice_patid(invoice: FhirInvoice) -> str | None:
    """The patid of the Invoice's subject: its ``urn:hsp:patid`` logical reference, else ``Patient/{patid}``."""
    if invoice.subject is None:
        return None
    return invoice.subject.logical(PATID_SYSTEM) or invoice.subject.id_of("Patient")


def _coding(concept: JsonObject, system: str, where: str) -> JsonObject | None:
    for i, coding in enumerate(_list(concept, "coding", where)):
        item = _object(coding, f"{where}.coding[{i}]")
        if item.get("system") == system:
            return item
    return None


def _bill_item(line: FhirLineItem, where: str) -> BillItem:
    """One line: the charge item and fee category codings, and one ``base`` price component whose ``factor`` is
    the quantity and whose ``amount`` is the line's amount (the unit price is the amount over the quantity)."""
    if line.charge_item is None:
        raise FhirParseError(f"{where}.chargeItemCodeableConcept", "is required (chargeItemReference is not profiled)")
    concept_where = f"{where}.chargeItemCodeableConcept"
    item = _coding(line.charge_item, CHARGE_ITEM_SYSTEM, concept_where)
    if item is None:
        raise FhirParseError(concept_where, f"no {CHARGE_ITEM_SYSTEM} coding")
    code = _required(item, "code", f"{concept_where}.coding")
    name = _string(line.charge_item, "text", concept_where) or _string(item, "display", f"{concept_where}.coding")
    if not name or not name.strip():
        raise FhirParseError(concept_where, "names no charge item (text or display)")
    category_coding = _coding(line.charge_item, FEE_CATEGORY_SYSTEM, concept_where)
    category = None
    if category_coding is not None:
        category = _string(category_coding, "display", f"{concept_where}.coding") or _string(
            category_coding, "code", f"{concept_where}.coding"
        )
    if not category or not category.strip():
        raise FhirParseError(concept_where, f"no {FEE_CATEGORY_SYSTEM} coding")
    priced = [c for c in line.price_components if c.type != "informational"]
    if len(priced) != 1 or priced[0].type != "base":
        raise FhirParseError(f"{where}.priceComponent", "must be one base component (no surcharge, discount or tax)")
    base = priced[0]
    if base.amount is None:
        raise FhirParseError(f"{where}.priceComponent.amount", "is required")
    amount = base.amount.to_fen(f"{where}.priceComponent.amount")
    factor = Decimal(1) if base.factor is None else base.factor
    if factor != factor.to_integral_value() or factor < 1:
        raise FhirParseError(f"{where}.priceComponent.factor", "must be a whole quantity of at least 1")
    quantity = int(factor)
    unit, rest = divmod(amount, quantity)
    if amount < 0 or rest:
        raise FhirParseError(f"{where}.priceComponent.amount", "is not a whole number of fen per unit")
    return BillItem(
        code=code, name=name.strip(), quantity=quantity, unit_price_fen=unit, amount_fen=amount, category=category
    )


def to_bill(invoice: FhirInvoice, hospital_code: str) -> OutpatientBill:
    """The outpatient bill of an Invoice: fen exactly, the totals checked against the lines (self-pay only: an
    Invoice with taxes or an insured part is not part of the profile yet)."""
    where = "Invoice"
    patid = invoice_patid(invoice)
    if not patid:
        raise FhirParseError(f"{where}.subject", f"names no patient ({PATID_SYSTEM} or Patient/{{patid}})")
    if invoice.date is None:
        raise FhirParseError(f"{where}.date", "is required")
    if not invoice.line_items:
        raise FhirParseError(f"{where}.lineItem", "is required")
    items = tuple(_bill_item(line, f"{where}.lineItem[{i}]") for i, line in enumerate(invoice.line_items))
    lines = sum(item.amount_fen for item in items)
    totals = [
        (name, money.to_fen(f"{where}.{name}"))
        for name, money in (("totalGross", invoice.total_gross), ("totalNet", invoice.total_net))
        if money is not None
    ]
    if not totals:
        raise FhirParseError(f"{where}.totalGross", "is required")
    for name, total in totals:
        if total != lines:
            raise FhirParseError(f"{where}.{name}", "does not equal the sum of the line items")
    if invoice.insured is not None and invoice.insured.to_fen(f"{where}.extension[insured].valueMoney") != 0:
        raise FhirParseError(f"{where}.extension[insured]", "insured parts are not part of the profile yet")
    doctor = next(
        (
            actor.display
            for _, actor in invoice.participants
            if actor.display
            and (
                actor.logical(PRACTITIONER_SYSTEM) is not None
                or actor.id_of("Practitioner") is not None
                or actor.id_of("PractitionerRole") is not None
            )
        ),
        "",
    )
    department = (invoice.issuer.display or "") if invoice.issuer is not None else ""
    try:
        return OutpatientBill(
            hospital_code=hospital_code,
            bill_id=invoice.id,
            patid=patid,
            title=(invoice.type_text or "").strip() or bill_title(items),
            department=department.strip(),
            doctor_name=doctor.strip(),
            issued_at=invoice.date,
            items=items,
            self_pay_fen=lines,
            insured_fen=0,
            total_fen=lines,
            status=_BILL_STATUS[invoice.status],
        )
    except ValidationError as exc:
        raise FhirParseError(where, f"breaks a rule of bills ({exc.code})") from None


@dataclass(frozen=True, slots=True)
class Issue:
    severity: str | None
    code: str | None
    details: str | None
    detail_codes: tuple[str, ...]
    diagnostics: str | None


@dataclass(frozen=True, slots=True)
class FhirOperationOutcome:
    issues: tuple[Issue, ...]

    @property
    def first_code(self) -> str | None:
        return self.issues[0].code if self.issues else None


def parse_operation_outcome(raw: Any) -> FhirOperationOutcome:
    """Lenient: an error body that is not an OperationOutcome gives no issues."""
    if not isinstance(raw, Mapping) or raw.get("resourceType") != "OperationOutcome":
        return FhirOperationOutcome(())
    issues: list[Issue] = []
    for item in raw.get("issue") or ():
        if not isinstance(item, Mapping):
            continue
        details = item.get("details") if isinstance(item.get("details"), Mapping) else {}
        assert isinstance(details, Mapping)
        codes = tuple(
            str(c.get("code"))
            for c in details.get("coding") or ()
            if isinstance(c, Mapping) and isinstance(c.get("code"), str)
        )
        issues.append(
            Issue(
                severity=item.get("severity") if isinstance(item.get("severity"), str) else None,
                code=item.get("code") if isinstance(item.get("code"), str) else None,
                details=details.get("text") if isinstance(details.get("text"), str) else None,
                detail_codes=codes,
                diagnostics=item.get("diagnostics") if isinstance(item.get("diagnostics"), str) else None,
            )
        )
    return FhirOperationOutcome(tuple(issues))


@dataclass(frozen=True, slots=True)
class BundleEntry:
    resource: JsonObject
    mode: str | None

    @property
    def resource_type(self) -> str | None:
        value = self.resource.get("resourceType")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class FhirBundle:
    type: str
    entries: tuple[BundleEntry, ...]
    next_url: str | None

    def resources(self, resource_type: str, *, mode: str | None = None) -> list[JsonObject]:
        return [
            e.resource
            for e in self.entries
            if e.resource_type == resource_type and (mode is None or e.mode in (None, mode))
        ]


def parse_bundle(raw: Any, *, expected_type: str | None = None) -> FhirBundle:
    where = "Bundle"
    obj = _resource(raw, where)
    kind = _required(obj, "type", where)
    if expected_type is not None and kind != expected_type:
        raise FhirParseError(f"{where}.type", f"expected {expected_type}")
    next_url: str | None = None
    for i, link in enumerate(_list(obj, "link", where)):
        item = _object(link, f"{where}.link[{i}]")
        if item.get("relation") == "next":
            next_url = _required(item, "url", f"{where}.link[{i}]")
    entries: list[BundleEntry] = []
    for i, entry in enumerate(_list(obj, "entry", where)):
        item = _object(entry, f"{where}.entry[{i}]")
        resource = item.get("resource")
        if resource is None:
            continue
        search = item.get("search")
        mode = _string(_object(search, f"{where}.entry[{i}].search"), "mode", where) if search is not None else None
        entries.append(BundleEntry(_object(resource, f"{where}.entry[{i}].resource"), mode))
    return FhirBundle(type=kind, entries=tuple(entries), next_url=next_url)
