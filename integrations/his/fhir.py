"""The FHIR R4 HIS adapter: one hospital's FHIR base, spoken exactly as docs/his-fhir-profile.md describes.

Searches follow ``Bundle.link[relation=next]`` (R4 §3.1.1.5.4 "Paging"), guarded against loops and against
links that leave the hospital's base. Writes carry the request key as ``Appointment.identifier``
(``urn:hsp:request-key``) so that a repeated create returns the first one; updates are read-modify-write
``PUT``s of the whole resource (R4 §3.1.0.4 "update" replaces the resource). Money arrives as a FHIR
``decimal`` in yuan and is turned into integer fen through ``yuan_to_fen``, never through a float; instants
become aware UTC datetimes and calendar days are days in Asia/Shanghai.

Errors: 404/410 -> ``HisRejectedError`` ``his.not_found``; 409 -> ``his.slot_full`` (``his.lock_expired`` when
confirming a lock); 412, and a patient search matching more than one, -> ``his.ambiguous_match``; 422 ->
``his.session_stopped`` when the session is stopped, else ``his.business_rule``; 429, 5xx, timeouts and
transport failures -> ``HisUnavailableError`` (``his.throttled``, ``his.server_error``, ``his.timeout``,
``his.transport``); an answer that breaks the protocol -> ``his.bad_response``. Messages and logs name the
operation and the HTTP status, never a patient identifier, a name, or the HIS's free text.

Billing (诊间支付): ``Invoice`` searches and reads become ``OutpatientBill`` (a 404 on a read is
``BillNotFoundError``); ``$settle`` answers a ``Settlement``, and any 4xx to it is a final
``BillSettlementRefusedError`` whose reason comes from the OperationOutcome's detail code
(``urn:hsp:settlement-refusal``); 429, 5xx and timeouts stay ``HisUnavailableError`` (retry with the same key).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, urlencode

import httpx

from domain.billing.model import BillStatus, OutpatientBill, Settlement
from domain.billing.ports import BillNotFoundError, BillSettlementRefusedError, SettlementRefusal
from domain.catalogue.model import (
    Department,
    Doctor,
    HisLock,
    HisRegistration,
    PatientDocument,
    QueuePosition,
    ScheduleSession,
)
from domain.catalogue.ports import HisRejectedError, HisUnavailableError
from domain.kernel.clock import Clock
from domain.kernel.errors import ValidationError
from domain.kernel.money import fen_to_yuan
from integrations.his.resources import (
    DEPARTMENT_SYSTEM,
    ID_TYPE_SYSTEM_PREFIX,
    PATID_SYSTEM,
    PRACTITIONER_SYSTEM,
    REQUEST_KEY_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SESSION_SYSTEM,
    FhirAppointment,
    FhirBundle,
    FhirInvoice,
    FhirOrganization,
    FhirParseError,
    FhirPatient,
    FhirPractitioner,
    FhirPractitionerRole,
    FhirSchedule,
    FhirSlot,
    loads,
    parse_appointment,
    parse_bundle,
    parse_healthcare_service,
    parse_invoice,
    parse_operation_outcome,
    parse_organization,
    parse_patient,
    parse_practitioner,
    parse_practitioner_role,
    parse_schedule,
    parse_slot,
    to_bill,
    to_department,
    to_doctor,
    to_session,
)
from integrations.resilience import Failure, FailureKind

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
HIS_FAILURE = FailureKind(HisUnavailableError, "his")

MAX_PAGES = 500
"""A search never follows more ``next`` links than this."""
SLOT_FETCH_CONCURRENCY = 4
"""Slot searches run at once for one ``sessions`` call."""

REGISTERED = frozenset({"booked", "arrived", "checked-in", "fulfilled"})

T = TypeVar("T")
P = ParamSpec("P")

_MESSAGES: Mapping[str, str] = {
    "his.not_found": "医院系统中找不到该记录",
    "his.slot_full": "该时段号源已约满，请选择其他时段",
    "his.lock_expired": "锁号已过期，请重新预约",
    "his.session_stopped": "该出诊已停诊，请选择其他医生或时段",
    "his.ambiguous_match": "医院系统中匹配到多位患者，请到医院窗口办理",
    "his.no_queue": "该挂号当前没有候诊信息",
    "his.not_a_lock": "该预约不是锁号，不能释放",
    "his.registration_cancelled": "该挂号已取消",
}


def _rejected(code: str, detail: str, extra: Mapping[str, object] | None = None) -> HisRejectedError:
    return HisRejectedError(detail, code=code, message=_MESSAGES.get(code), extra=extra)


_REFUSALS: Mapping[str, SettlementRefusal] = {
    "amount-mismatch": SettlementRefusal.AMOUNT_MISMATCH,
    "bill-cancelled": SettlementRefusal.CANCELLED,
    "already-settled": SettlementRefusal.ALREADY_SETTLED,
    "wrong-patient": SettlementRefusal.WRONG_PATIENT,
    "unknown-bill": SettlementRefusal.UNKNOWN_BILL,
}
"""``OperationOutcome.issue[0].details.coding[0].code`` of a refused ``$settle`` (``urn:hsp:settlement-refusal``)."""


def _refused(error: HisRejectedError) -> BillSettlementRefusedError:
    """A ``$settle`` the HIS answered with a 4xx: final. The reason comes from the outcome's detail code, else
    from the status (404: the bill is unknown)."""
    detail_code = error.extra.get("detail_code")
    reason = _REFUSALS.get(detail_code) if isinstance(detail_code, str) else None
    if reason is None:
        unknown = error.extra.get("status") in (404, 410)
        reason = SettlementRefusal.UNKNOWN_BILL if unknown else SettlementRefusal.REFUSED
    return BillSettlementRefusedError(error.detail, reason=reason, extra={"status": error.extra.get("status")})


def _yuan_number(fen: int) -> int | float:
    """Fen as the JSON number of a FHIR ``decimal`` in yuan. The shortest repr of the nearest binary float of a
    decimal with at most 15 significant digits is that decimal itself, so ``12.34`` goes out as ``12.34``
    exactly (amounts stay below 10**13 yuan: at most 15 significant digits)."""
    if isinstance(fen, bool) or not isinstance(fen, int) or not 0 < fen < 10**15:
        raise ValueError("an amount to settle is a positive integer number of fen")
    whole, cents = divmod(fen, 100)
    return whole if cents == 0 else float(Decimal(fen_to_yuan(fen)))


def _retry_after(response: httpx.Response) -> int | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(1, int(raw.strip()))
    except ValueError:
        return None  # an HTTP-date: leave the pause to the backoff


def identifier_system(id_type: str) -> str:
    """CV02.01.101 ID document type -> identifier system: 01 (居民身份证) has its OID, others ours."""
    return RESIDENT_ID_SYSTEM if id_type == "01" else f"{ID_TYPE_SYSTEM_PREFIX}{id_type}"


def _plain(value: Any) -> Any:
    """JSON-ready: a decimal we echo back (an element we read as ``Decimal`` and do not use) becomes an int
    when whole, else its float; the values we send ourselves are never decimals."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _instant_param(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: instants are aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FhirHisAdapter:
    """``HisAdapter`` over one hospital's FHIR R4 base (``.../sandbox/his/{code}/fhir`` in the sandbox)."""

    def __init__(
        self,
        *,
        hospital_code: str,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Clock,
        timeout_seconds: float = 5.0,
        page_size: int = 50,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._code = hospital_code
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._http = http
        self._clock = clock
        self._timeout = httpx.Timeout(timeout_seconds)
        self._page_size = page_size
        self._schedule_ids: dict[str, str] = {}
        """Session id -> Schedule id, learnt from searches (for ``$stop``)."""

    @property
    def hospital_code(self) -> str:
        return self._code

    def __repr__(self) -> str:
        return f"FhirHisAdapter({self._code!r}, {str(self._base)!r})"

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> httpx.URL:
        return self._base.join(path)

    def _check_link(self, link: str, op: str) -> httpx.URL:
        """A ``next`` link must stay under the hospital's FHIR base (no redirection of our requests)."""
        url = self._base.join(link)
        same_origin = (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)
        if not same_origin or not url.path.startswith(self._base.path):
            raise HIS_FAILURE(Failure.BAD_RESPONSE, f"HIS {self._code} {op}: a paging link leaves the FHIR base")
        return url

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        *,
        op: str,
        params: Sequence[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        on_conflict: str = "his.slot_full",
    ) -> Any:
        """One request; the decoded JSON answer of a 2xx, or the mapped error."""
        sent = {"Accept": FHIR_JSON, **(headers or {})}
        content: bytes | None = None
        if body is not None:
            sent["Content-Type"] = FHIR_JSON
            content = json.dumps(_plain(body), ensure_ascii=False, separators=(",", ":")).encode()
        where = f"HIS {self._code} {op}"
        try:
            response = await self._http.request(
                method,
                url,
                params=list(params) if params is not None else None,
                content=content,
                headers=sent,
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            logger.warning("%s: timed out", where)
            raise HIS_FAILURE(Failure.TIMEOUT, f"{where}: timed out") from None
        except httpx.TransportError as exc:
            logger.warning("%s: transport failure (%s)", where, type(exc).__name__)
            raise HIS_FAILURE(Failure.TRANSPORT, f"{where}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise HIS_FAILURE(Failure.BAD_RESPONSE, f"{where}: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return None
            try:
                return loads(response.content)
            except FhirParseError:
                raise HIS_FAILURE(
                    Failure.BAD_RESPONSE, f"{where}: HTTP {status} with a body that is not JSON"
                ) from None
        issue, detail_code = self._outcome_codes(response)
        detail = f"{where}: HTTP {status}" + (f" ({issue})" if issue else "")
        detail += f" [{detail_code}]" if detail_code else ""
        logger.log(logging.WARNING if status >= 500 or status == 429 else logging.INFO, "%s", detail)
        extra = {"status": status, "detail_code": detail_code}
        if status in (404, 410):
            raise _rejected("his.not_found", detail, extra)
        if status == 409:
            raise _rejected(on_conflict, detail, extra)
        if status == 412:
            raise _rejected("his.ambiguous_match", detail, extra)
        if status == 422:
            raise _rejected("his.business_rule", detail, extra)
        if status == 400:
            raise _rejected("his.bad_request", detail, extra)
        if status == 429:
            raise HIS_FAILURE(Failure.THROTTLED, detail, retry_after=_retry_after(response))
        if status >= 500:
            raise HIS_FAILURE(Failure.SERVER, detail, retry_after=_retry_after(response))
        raise HIS_FAILURE(Failure.BAD_RESPONSE, detail)

    @staticmethod
    def _outcome_codes(response: httpx.Response) -> tuple[str | None, str | None]:
        """The OperationOutcome's first issue code and its first detail code (FHIR codes, never the free-text
        diagnostics)."""
        try:
            outcome = parse_operation_outcome(loads(response.content))
        except FhirParseError:
            return None, None

        def safe(code: str | None) -> str | None:
            return code if code and code.replace("-", "").isalnum() and code.isascii() and len(code) <= 40 else None

        first = outcome.issues[0] if outcome.issues else None
        return safe(outcome.first_code), safe(first.detail_codes[0] if first and first.detail_codes else None)

    def _bad(self, op: str, exc: FhirParseError) -> HisUnavailableError:
        error = HIS_FAILURE(Failure.BAD_RESPONSE, f"HIS {self._code} {op}: {exc}")
        assert isinstance(error, HisUnavailableError)
        return error

    def _parsed(self, op: str, parse: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``parse(*args)``; a ``FhirParseError`` becomes ``his.bad_response`` (the HIS broke the profile)."""
        try:
            return parse(*args, **kwargs)
        except FhirParseError as exc:
            logger.warning("HIS %s %s: bad resource (%s)", self._code, op, exc.where)
            raise self._bad(op, exc) from None

    async def _search(self, resource_type: str, params: Sequence[tuple[str, str]], *, op: str) -> list[FhirBundle]:
        """Every page of a search, following ``next`` links."""
        url: httpx.URL | None = self._url(resource_type)
        query: Sequence[tuple[str, str]] | None = [*params, ("_count", str(self._page_size))]
        seen: set[str] = set()
        pages: list[FhirBundle] = []
        while url is not None:
            key = str(url.copy_merge_params(list(query)) if query else url)
            if key in seen or len(pages) >= MAX_PAGES:
                raise HIS_FAILURE(Failure.BAD_RESPONSE, f"HIS {self._code} {op}: paging does not end")
            seen.add(key)
            answer = await self._call("GET", url, op=op, params=query)
            bundle = self._parsed(op, parse_bundle, answer, expected_type="searchset")
            pages.append(bundle)
            url = self._check_link(bundle.next_url, op) if bundle.next_url else None
            query = None
        return pages

    async def _read(self, resource_type: str, resource_id: str, *, op: str) -> Any:
        return await self._call("GET", self._url(f"{resource_type}/{quote(resource_id, safe='')}"), op=op)

    # ------------------------------------------------------------------ directory

    async def organization(self) -> FhirOrganization:
        """The hospital's Organization (``identifier=urn:hsp:hospital|{code}``)."""
        op = "search Organization"
        pages = await self._search("Organization", [("identifier", f"urn:hsp:hospital|{self._code}")], op=op)
        found = [r for page in pages for r in page.resources("Organization", mode="match")]
        if not found:
            raise _rejected("his.not_found", f"HIS {self._code} {op}: no Organization")
        return self._parsed(op, parse_organization, found[0])

    async def _services(self) -> dict[str, str]:
        """HealthcareService id -> department code."""
        return {d.id: d.code for d in await self._service_records()}

    async def _service_records(self) -> list[_Service]:
        op = "search HealthcareService"
        pages = await self._search("HealthcareService", [], op=op)
        records: list[_Service] = []
        for page in pages:
            for raw in page.resources("HealthcareService", mode="match"):
                service = self._parsed(op, parse_healthcare_service, raw)
                department = self._parsed(op, to_department, service, self._code)
                records.append(_Service(service.id, department.code, department))
        return records

    async def departments(self) -> Sequence[Department]:
        return [record.department for record in await self._service_records()]

    async def _roles(self) -> tuple[list[FhirPractitionerRole], dict[str, FhirPractitioner]]:
        op = "search PractitionerRole"
        pages = await self._search("PractitionerRole", [("_include", "PractitionerRole:practitioner")], op=op)
        roles: list[FhirPractitionerRole] = []
        practitioners: dict[str, FhirPractitioner] = {}
        for page in pages:
            for raw in page.resources("PractitionerRole", mode="match"):
                roles.append(self._parsed(op, parse_practitioner_role, raw))
            for raw in page.resources("Practitioner", mode="include"):
                practitioner = self._parsed(op, parse_practitioner, raw)
                practitioners[practitioner.id] = practitioner
        return roles, practitioners

    async def doctors(self) -> Sequence[Doctor]:
        op = "search PractitionerRole"
        roles, practitioners = await self._roles()
        literal_only = any(ref.logical(DEPARTMENT_SYSTEM) is None for r in roles for ref in r.healthcare_services)
        services = await self._services() if literal_only else {}
        doctors: list[Doctor] = []
        for role in roles:
            practitioner_id = role.practitioner.id_of("Practitioner") if role.practitioner else None
            practitioner = practitioners.get(practitioner_id) if practitioner_id else None
            doctors.append(self._parsed(op, to_doctor, role, practitioner, self._code, services))
        return doctors

    # ------------------------------------------------------------------ schedules

    async def _slots_of(self, schedule: FhirSchedule) -> list[FhirSlot]:
        op = "search Slot"
        if not schedule.id:
            raise self._bad(op, FhirParseError("Schedule.id", "is required to find its slots"))
        pages = await self._search("Slot", [("schedule", f"Schedule/{schedule.id}")], op=op)
        return [self._parsed(op, parse_slot, raw) for page in pages for raw in page.resources("Slot", mode="match")]

    async def _to_sessions(self, schedules: Sequence[FhirSchedule]) -> list[ScheduleSession]:
        literal_only = any(
            ref.logical(DEPARTMENT_SYSTEM) is None and ref.logical(PRACTITIONER_SYSTEM) is None
            for s in schedules
            for ref in s.actors
        )
        services: dict[str, str] = {}
        doctor_of: dict[str, str] = {}
        if literal_only:
            services = await self._services()
            roles, practitioners = await self._roles()
            for role in roles:
                pid = role.practitioner.id_of("Practitioner") if role.practitioner else None
                practitioner = practitioners.get(pid) if pid else None
                code = practitioner.practitioner_code if practitioner else None
                if code:
                    doctor_of[role.id] = code
        gate = asyncio.Semaphore(SLOT_FETCH_CONCURRENCY)

        async def slots(schedule: FhirSchedule) -> list[FhirSlot]:
            async with gate:
                return await self._slots_of(schedule)

        all_slots = await asyncio.gather(*(slots(s) for s in schedules))
        now = self._clock.now()
        sessions: list[ScheduleSession] = []
        for schedule, found in zip(schedules, all_slots, strict=True):
            session = self._parsed(
                "search Schedule",
                to_session,
                schedule,
                found,
                self._code,
                department_of=services,
                doctor_of=doctor_of,
                now=now,
            )
            if schedule.id:
                self._schedule_ids[session.id] = schedule.id
            sessions.append(session)
        return sessions

    async def _schedules(self, params: Sequence[tuple[str, str]]) -> list[FhirSchedule]:
        op = "search Schedule"
        pages = await self._search("Schedule", params, op=op)
        return [
            self._parsed(op, parse_schedule, raw) for page in pages for raw in page.resources("Schedule", mode="match")
        ]

    async def sessions(
        self, start: date, end: date, *, changed_since: datetime | None = None
    ) -> Sequence[ScheduleSession]:
        """``GET Schedule?date=ge{start}&date=le{end}[&_lastUpdated=gt{instant}]``, then each one's slots."""
        params = [("date", f"ge{start.isoformat()}"), ("date", f"le{end.isoformat()}")]
        if changed_since is not None:
            params.append(("_lastUpdated", f"gt{_instant_param(changed_since)}"))
        return await self._to_sessions(await self._schedules(params))

    async def _schedule(self, session_id: str) -> FhirSchedule:
        found = await self._schedules([("identifier", f"{SESSION_SYSTEM}|{session_id}")])
        matching = [s for s in found if s.session_id == session_id]
        if not matching:
            raise _rejected("his.not_found", f"HIS {self._code} search Schedule: no such session")
        if len(matching) > 1:
            raise HIS_FAILURE(Failure.BAD_RESPONSE, f"HIS {self._code} search Schedule: session id is not unique")
        return matching[0]

    async def session(self, session_id: str) -> ScheduleSession:
        return (await self._to_sessions([await self._schedule(session_id)]))[0]

    async def stop_session(self, session_id: str, *, reason: str, key: str) -> None:
        """``POST Schedule/{id}/$stop`` with ``Parameters{reason}``; stopping a stopped session changes nothing."""
        schedule_id = self._schedule_ids.get(session_id)
        if schedule_id is None:
            schedule = await self._schedule(session_id)
            if not schedule.id:
                raise self._bad("search Schedule", FhirParseError("Schedule.id", "is required"))
            schedule_id = schedule.id
            self._schedule_ids[session_id] = schedule_id
        body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]}
        await self._call("POST", self._url(f"Schedule/{quote(schedule_id, safe='')}/$stop"), op="$stop", body=body)

    # ------------------------------------------------------------------ registration

    def _appointment(self, op: str, answer: Any) -> FhirAppointment:
        return self._parsed(op, parse_appointment, answer)

    async def _get_appointment(self, appointment_id: str) -> FhirAppointment:
        op = "read Appointment"
        return self._appointment(op, await self._read("Appointment", appointment_id, op=op))

    async def _put_appointment(
        self, appointment: FhirAppointment, changes: Mapping[str, Any], *, op: str, on_conflict: str = "his.conflict"
    ) -> FhirAppointment:
        body = {k: v for k, v in appointment.raw.items() if k != "meta"} | dict(changes)
        body["id"] = appointment.id
        url = self._url(f"Appointment/{quote(appointment.id, safe='')}")
        answer = await self._call("PUT", url, op=op, body=body, on_conflict=on_conflict)
        return self._appointment(op, answer)

    @staticmethod
    def _new_appointment(status: str, slot_id: str, patid: str, key: str) -> dict[str, Any]:
        return {
            "resourceType": "Appointment",
            "identifier": [{"system": REQUEST_KEY_SYSTEM, "value": key}],
            "status": status,
            "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [
                {
                    "actor": {"type": "Patient", "identifier": {"system": PATID_SYSTEM, "value": patid}},
                    "required": "required",
                    "status": "accepted",
                }
            ],
        }

    async def _explain(self, error: HisRejectedError, slot_id: str | None) -> HisRejectedError:
        """Refine a 422: ``his.session_stopped`` when the slot's Schedule is inactive (read, not guessed from
        the HIS's free text)."""
        if error.code != "his.business_rule" or not slot_id:
            return error
        try:
            slot = self._parsed("read Slot", parse_slot, await self._read("Slot", slot_id, op="read Slot"))
            schedule_id = slot.schedule.id_of("Schedule")
            if schedule_id is None:
                return error
            answer = await self._read("Schedule", schedule_id, op="read Schedule")
            schedule = self._parsed("read Schedule", parse_schedule, answer)
        except (HisRejectedError, HisUnavailableError):
            return error
        if not schedule.active:
            return _rejected("his.session_stopped", error.detail)
        return error

    async def lock(self, slot_id: str, *, patid: str, key: str) -> HisLock:
        """锁号: ``POST Appointment`` ``status=proposed``; the Appointment id is the lock id."""
        op = "create Appointment (lock)"
        try:
            answer = await self._call(
                "POST", self._url("Appointment"), op=op, body=self._new_appointment("proposed", slot_id, patid, key)
            )
        except HisRejectedError as exc:
            raise await self._explain(exc, slot_id) from None
        appointment = self._appointment(op, answer)
        if appointment.status not in ("proposed", *REGISTERED):
            raise _rejected("his.lock_expired", f"HIS {self._code} {op}: the key's lock has ended")
        return HisLock(lock_id=appointment.id, expires_at=appointment.lock_expires)

    async def unlock(self, lock_id: str, *, key: str) -> None:
        """``PUT Appointment/{id}`` with ``status=cancelled``; an ended lock stays as it is."""
        appointment = await self._get_appointment(lock_id)
        if appointment.status == "cancelled":
            return
        if appointment.status != "proposed":
            raise _rejected("his.not_a_lock", f"HIS {self._code} unlock: the Appointment is not a lock")
        await self._put_appointment(
            appointment, {"status": "cancelled", "cancelationReason": {"text": "锁号释放"}}, op="update Appointment"
        )

    async def confirm(self, slot_id: str, *, patid: str, key: str, lock_id: str | None = None) -> HisRegistration:
        """``PUT Appointment/{lockId}`` proposed -> booked, or ``POST Appointment`` ``status=booked`` with the
        request key; a repeat returns the same registration."""
        if lock_id is not None:
            op = "update Appointment (confirm)"
            lock = await self._get_appointment(lock_id)
            if lock.status in REGISTERED:
                return HisRegistration(registration_id=lock.id, queue_number=lock.queue_number)
            if lock.status != "proposed":
                raise _rejected("his.lock_expired", f"HIS {self._code} {op}: the lock has ended")
            if not any(ref.id_of("Slot") == slot_id for ref in lock.slots):
                raise _rejected("his.not_a_lock", f"HIS {self._code} {op}: the lock is on another slot")
            try:
                booked = await self._put_appointment(lock, {"status": "booked"}, op=op, on_conflict="his.lock_expired")
            except HisRejectedError as exc:
                raise await self._explain(exc, slot_id) from None
        else:
            op = "create Appointment (register)"
            try:
                answer = await self._call(
                    "POST", self._url("Appointment"), op=op, body=self._new_appointment("booked", slot_id, patid, key)
                )
            except HisRejectedError as exc:
                raise await self._explain(exc, slot_id) from None
            booked = self._appointment(op, answer)
        if booked.status not in REGISTERED:
            raise _rejected("his.registration_cancelled", f"HIS {self._code} {op}: the key's registration has ended")
        return HisRegistration(registration_id=booked.id, queue_number=booked.queue_number)

    async def cancel(self, registration_id: str, *, reason: str, key: str) -> None:
        """``PUT Appointment/{id}`` ``status=cancelled`` with ``cancelationReason.text``; a repeat is a no-op."""
        appointment = await self._get_appointment(registration_id)
        if appointment.status == "cancelled":
            return
        await self._put_appointment(
            appointment,
            {"status": "cancelled", "cancelationReason": {"text": reason}},
            op="update Appointment (cancel)",
        )

    @staticmethod
    def _queue(appointment: FhirAppointment, where: str) -> QueuePosition:
        if appointment.queue_ahead is None:
            raise _rejected("his.no_queue", f"{where}: no queue-ahead")
        return QueuePosition(ahead=appointment.queue_ahead, current_number=appointment.queue_current)

    async def check_in(self, registration_id: str, *, key: str) -> QueuePosition:
        """``PUT Appointment/{id}`` ``status=arrived``; the answer carries ``queue-ahead``."""
        op = "update Appointment (check-in)"
        appointment = await self._get_appointment(registration_id)
        if appointment.status != "arrived":
            slot_id = next((s for ref in appointment.slots if (s := ref.id_of("Slot"))), None)
            try:
                appointment = await self._put_appointment(appointment, {"status": "arrived"}, op=op)
            except HisRejectedError as exc:
                raise await self._explain(exc, slot_id) from None
        return self._queue(appointment, f"HIS {self._code} {op}")

    async def queue_position(self, registration_id: str) -> QueuePosition:
        """``GET Appointment/{id}``: ``queue-ahead`` and ``queue-current``."""
        return self._queue(await self._get_appointment(registration_id), f"HIS {self._code} read Appointment")

    # ------------------------------------------------------------------ patients

    @staticmethod
    def _match_criteria(document: PatientDocument) -> list[tuple[str, str]] | None:
        """What identifies the person at the HIS: their ID document, or for a child without one the guardian's
        document, the name and the birth date; None when neither is known."""
        if document.id_type and document.id_number:
            return [("identifier", f"{identifier_system(document.id_type)}|{document.id_number}")]
        if document.guardian_id_type and document.guardian_id_number:
            return [
                (
                    "guardian-identifier",
                    f"{identifier_system(document.guardian_id_type)}|{document.guardian_id_number}",
                ),
                ("name", document.name),
                ("birthdate", document.birth_date.isoformat()),
            ]
        return None

    async def find_or_create(self, document: PatientDocument, *, key: str) -> str:
        """Conditional create (R4 §3.1.0.8): ``POST Patient`` with ``If-None-Exist`` on the ID document, or for a
        child without one on the guardian's document, the name and the birth date."""
        op = "create Patient"
        criteria = self._match_criteria(document)
        if criteria is None:
            raise ValidationError(
                "a patient needs an ID document or a guardian's to be matched", code="his.patient_unidentified"
            )
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "name": [{"text": document.name}],
            "gender": {"M": "male", "F": "female"}.get(document.sex.upper(), "unknown"),
            "birthDate": document.birth_date.isoformat(),
        }
        if document.phone:
            patient["telecom"] = [{"system": "phone", "value": document.phone, "use": "mobile"}]
        if document.id_type and document.id_number:
            patient["identifier"] = [{"system": identifier_system(document.id_type), "value": document.id_number}]
        elif document.guardian_id_type and document.guardian_id_number:
            system = identifier_system(document.guardian_id_type)
            contact: dict[str, Any] = {
                "extension": [
                    {
                        "url": "guardian-identifier",
                        "valueIdentifier": {"system": system, "value": document.guardian_id_number},
                    }
                ],
                "relationship": [{"text": "监护人"}],
            }
            if document.guardian_name:
                contact["name"] = {"text": document.guardian_name}
            patient["contact"] = [contact]
        answer = await self._call(
            "POST",
            self._url("Patient"),
            op=op,
            body=patient,
            headers={"If-None-Exist": urlencode(criteria, safe="|:")},
        )
        found = self._parsed(op, parse_patient, answer)
        if not found.patid:
            raise self._bad(op, FhirParseError("Patient.identifier", f"no {PATID_SYSTEM} identifier"))
        return found.patid

    async def find(self, document: PatientDocument) -> str | None:
        """``GET Patient?identifier={system}|{value}`` (or, for a child without a document, the conditional
        create's ``guardian-identifier``, ``name`` and ``birthdate``): the one match's patid, None for none.
        Never creates. More than one match is ``his.ambiguous_match``; a match that does not carry what was
        searched for (a HIS ignoring the parameter) breaks the profile."""
        op = "search Patient"
        criteria = self._match_criteria(document)
        if criteria is None:
            return None
        answer = await self._call("GET", self._url("Patient"), op=op, params=[*criteria, ("_count", "2")])
        bundle = self._parsed(op, parse_bundle, answer, expected_type="searchset")
        matches = bundle.resources("Patient", mode="match")
        if len(matches) > 1 or (matches and bundle.next_url):
            raise _rejected("his.ambiguous_match", f"HIS {self._code} {op}: more than one patient matches")
        if not matches:
            return None
        found = self._parsed(op, parse_patient, matches[0])
        if not found.patid:
            raise self._bad(op, FhirParseError("Patient.identifier", f"no {PATID_SYSTEM} identifier"))
        if not self._is_match(document, found, matches[0]):
            raise self._bad(op, FhirParseError("Patient", "is not the patient searched for"))
        return found.patid

    @staticmethod
    def _is_match(document: PatientDocument, found: FhirPatient, raw: Mapping[str, Any]) -> bool:
        """The Patient found carries the document searched for (or the guardian's, the name and birth date)."""
        if document.id_type and document.id_number:
            system = identifier_system(document.id_type)
            return any(i.system == system and i.value == document.id_number for i in found.identifiers)
        if not (document.guardian_id_type and document.guardian_id_number):
            return False
        wanted = {"system": identifier_system(document.guardian_id_type), "value": document.guardian_id_number}
        guardians = [
            extension.get("valueIdentifier")
            for contact in raw.get("contact") or ()
            if isinstance(contact, Mapping)
            for extension in contact.get("extension") or ()
            if isinstance(extension, Mapping) and extension.get("url") == "guardian-identifier"
        ]
        return (
            found.name == document.name
            and found.birth_date == document.birth_date
            and any(isinstance(g, Mapping) and {k: g.get(k) for k in wanted} == wanted for g in guardians)
        )

    # ------------------------------------------------------------------ billing (诊间支付)

    def _bill(self, op: str, raw: Any) -> tuple[FhirInvoice, OutpatientBill]:
        invoice = self._parsed(op, parse_invoice, raw)
        return invoice, self._parsed(op, to_bill, invoice, self._code)

    async def unpaid_bills(self, patid: str) -> Sequence[OutpatientBill]:
        """``GET Invoice?subject=Patient/{patid}&status=issued``: the patient's unpaid bills, oldest first. A bill
        of another patient in the answer breaks the profile (never shown to this one)."""
        op = "search Invoice"
        pages = await self._search("Invoice", [("subject", f"Patient/{patid}"), ("status", "issued")], op=op)
        bills: dict[str, OutpatientBill] = {}
        for page in pages:
            for raw in page.resources("Invoice", mode="match"):
                _, bill = self._bill(op, raw)
                if bill.patid != patid:
                    raise self._bad(op, FhirParseError("Invoice.subject", "names another patient"))
                if bill.payable:
                    bills[bill.bill_id] = bill
        return sorted(bills.values(), key=lambda b: (b.issued_at, b.bill_id))

    async def bill(self, bill_id: str) -> OutpatientBill:
        """``GET Invoice/{id}`` (the bill id is the Invoice's logical id)."""
        op = "read Invoice"
        try:
            answer = await self._read("Invoice", bill_id, op=op)
        except HisRejectedError as exc:
            if exc.code == "his.not_found":
                raise BillNotFoundError(exc.detail) from None
            raise
        invoice, bill = self._bill(op, answer)
        if invoice.id != bill_id:
            raise self._bad(op, FhirParseError("Invoice.id", "is not the id asked for"))
        return bill

    async def settle(
        self, bill_id: str, *, patid: str, amount_fen: int, payment_ref: str, channel: str, key: str
    ) -> Settlement:
        """``POST Invoice/{id}/$settle`` with ``Parameters{amount, patient, paymentReference, channel,
        requestKey}``; the answer is the Invoice, ``balanced``, with ``identifier[urn:hsp:receipt]`` and
        ``extension[settled-at]``. A repeat with the request key answers the same Invoice; any 4xx is a final
        ``BillSettlementRefusedError``."""
        op = "$settle Invoice"
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "amount", "valueMoney": {"value": _yuan_number(amount_fen), "currency": "CNY"}},
                {"name": "patient", "valueIdentifier": {"system": PATID_SYSTEM, "value": patid}},
                {"name": "paymentReference", "valueString": payment_ref},
                {"name": "channel", "valueCode": channel},
                {"name": "requestKey", "valueIdentifier": {"system": REQUEST_KEY_SYSTEM, "value": key}},
            ],
        }
        url = self._url(f"Invoice/{quote(bill_id, safe='')}/$settle")
        try:
            answer = await self._call("POST", url, op=op, body=body, on_conflict="his.conflict")
        except HisRejectedError as exc:
            raise _refused(exc) from None
        invoice, bill = self._bill(op, answer)
        where = f"HIS {self._code} {op}"
        if invoice.id != bill_id or bill.patid != patid:
            raise self._bad(op, FhirParseError("Invoice", "is not the bill settled"))
        if bill.status is not BillStatus.PAID:
            raise self._bad(op, FhirParseError("Invoice.status", "must be balanced after $settle"))
        if bill.total_fen != amount_fen:
            raise self._bad(op, FhirParseError("Invoice.totalGross", "is not the amount settled"))
        if not invoice.receipt_no or invoice.settled_at is None:
            missing = "identifier" if not invoice.receipt_no else "extension[settled-at]"
            raise self._bad(op, FhirParseError(f"Invoice.{missing}", "is required after $settle"))
        logger.info("%s: settled", where)
        return Settlement(bill_id=bill_id, his_receipt_no=invoice.receipt_no, settled_at=invoice.settled_at)


@dataclass(frozen=True, slots=True)
class _Service:
    id: str
    code: str
    department: Department
