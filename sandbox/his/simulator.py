"""The sandbox HIS's state and behaviour: per-hospital catalogues, capacity, locks, registrations, patients,
outpatient bills and their settlement, and the rest-hook pushes. The HTTP side is in ``sandbox.his.routes``."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from litestar.types import ControllerRouterHandler

from domain.kernel.clock import SHANGHAI
from sandbox.framework import Simulator
from sandbox.his import fhir
from sandbox.his.fhir import FhirError, Query, Resource
from sandbox.his.seed import (
    AppointmentRec,
    BillItemRec,
    BillRec,
    Directory,
    DoctorRec,
    PatientRec,
    SessionRec,
    SlotRec,
    generate_bills,
    generate_day,
    generate_directory,
)

LOCK_EXPIRED = "锁号超时未确认"
LOCK_CONVERTED = "锁号已转为挂号"
DEFAULT_STOP_REASON = "医生停诊"
SETTLEMENT_REFUSED = "医院系统拒绝结算：收费日结已关闭"
"""What the refusal switch answers (the HIS's own rule)."""
PUSH_RETRIES = (10.0, 60.0, 300.0, 900.0)
"""Seconds of shared-clock time before each retry of an unacknowledged push."""

_ACTIVE = ("proposed", "booked", "arrived")
_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "proposed": frozenset({"booked", "cancelled"}),
    "booked": frozenset({"arrived", "cancelled", "noshow"}),
    "arrived": frozenset({"fulfilled"}),
}

Render = Callable[[], Resource]


@dataclass(eq=False)
class HospitalState:
    """One hospital's FHIR server: its directory, sessions and everything made through the API."""

    directory: Directory
    number: int
    online: bool = True
    sessions: dict[str, SessionRec] = field(default_factory=dict)
    slots: dict[str, SlotRec] = field(default_factory=dict)
    generated_through: date | None = None
    appointments: dict[str, AppointmentRec] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    locks: dict[str, AppointmentRec] = field(default_factory=dict)
    patients: dict[str, PatientRec] = field(default_factory=dict)
    serial: int = 0
    bills: dict[str, BillRec] = field(default_factory=dict)
    bill_serial: int = 0
    receipt_serial: int = 0
    settle_keys: dict[str, str] = field(default_factory=dict)
    """Request key -> the bill it settled."""
    settle_refusals: dict[str, FhirError] = field(default_factory=dict)
    """Request key -> the refusal it got (final: the same key is refused again)."""
    refuse_settlements: int = 0
    """The refusal switch: how many of the next settlements are refused."""
    billing_online: bool = True
    """The billing switch: while off, Invoice requests answer 503 (the rest of the HIS keeps working)."""

    @property
    def code(self) -> str:
        return self.directory.hospital.code

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.number}{self.serial:08d}"

    def next_bill_id(self) -> str:
        """Bills count apart from the other ids, so that seeding bills moves no other id."""
        self.bill_serial += 1
        return f"INV{self.number}{self.bill_serial:08d}"

    def next_receipt_no(self) -> str:
        self.receipt_serial += 1
        return f"MZ{self.number}{self.receipt_serial:08d}"


class HisSimulator(Simulator):
    """Hospital information systems speaking FHIR R4 (docs/his-fhir-profile.md), one base per hospital at
    ``/sandbox/his/{hospitalCode}/fhir``.

    ``subscription_secrets`` (hospital code -> shared secret) sign the rest-hook pushes sent to
    ``{callback_base_url}/callbacks/his/{hospitalCode}`` when a session is stopped or a slot's capacity
    changes; without ``callback_base_url`` nothing is pushed. Locks expire ``lock_minutes`` after they are
    taken, on the shared clock.
    """

    name = "his"

    def __init__(
        self,
        *,
        name: str | None = None,
        days_ahead: int = 14,
        subscription_secrets: Mapping[str, str] | None = None,
        callback_base_url: str | None = None,
        lock_minutes: int = 10,
    ) -> None:
        super().__init__(name=name)
        if days_ahead < 1:
            raise ValueError("days_ahead must be at least 1")
        self.days_ahead = days_ahead
        self.subscription_secrets: dict[str, str] = dict(subscription_secrets or {})
        self.callback_base_url = callback_base_url
        self.lock_minutes = lock_minutes
        self.hospitals: dict[str, HospitalState] = {}
        self._day_base = 0
        self._pushes = 0

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        from sandbox.his.routes import ROUTES  # the handlers name this class: imported once it exists

        return ROUTES

    def seed(self, seed: int) -> None:
        """Rebuild every hospital from ``ctx.random`` (reseeded by the framework): directories, then the
        sessions of the next ``days_ahead`` days; appointments, patients and switches are forgotten."""
        rng = self.ctx.random
        directories = generate_directory(rng)
        self._day_base = rng.getrandbits(64)
        self._pushes = 0
        self.hospitals = {d.hospital.code: HospitalState(d, number) for number, d in enumerate(directories, 1)}
        now = self.ctx.clock.now()
        for state in self.hospitals.values():
            self._extend(state, now)

    # --- lifecycle of each request ---------------------------------------------------------------------------

    def hospital(self, code: str) -> HospitalState:
        """The hospital, brought up to date with the shared clock (no online check: test helpers)."""
        state = self.hospitals.get(code)
        if state is None:
            raise FhirError(404, "not-found", f"unknown hospital {code!r}")
        now = self.ctx.clock.now()
        self._extend(state, now)
        self._expire_locks(state, now)
        return state

    def serving(self, code: str) -> HospitalState:
        """The hospital for a FHIR request: 503 while it is switched off."""
        state = self.hospital(code)
        if not state.online:
            name = state.directory.hospital.name
            raise FhirError(503, "transient", f"{name}系统维护中", headers={"Retry-After": "60"})
        return state

    def _extend(self, state: HospitalState, now: datetime) -> None:
        """Generate the days up to ``days_ahead`` from today (China) that are not there yet."""
        today = now.astimezone(SHANGHAI).date()
        last = today + timedelta(days=self.days_ahead - 1)
        day = today if state.generated_through is None else max(today, state.generated_through + timedelta(days=1))
        while day <= last:
            # str seeds are hashed with SHA-512: stable across processes.
            rng = random.Random(f"{self._day_base}:{state.code}:{day.isoformat()}")  # noqa: S311
            for session in generate_day(state.directory, day, today=today, rng=rng, now=now):
                state.sessions[session.id] = session
                for slot in session.slots:
                    state.slots[slot.id] = slot
            state.generated_through = day
            day += timedelta(days=1)

    def _expire_locks(self, state: HospitalState, now: datetime) -> None:
        for lock in list(state.locks.values()):
            if lock.lock_expires is not None and lock.lock_expires <= now:
                lock.expired = True
                self._release(state, lock, "cancelled", LOCK_EXPIRED, now)

    # --- changes -----------------------------------------------------------------------------------------------

    @staticmethod
    def _touch(session: SessionRec, slots: Sequence[SlotRec], now: datetime) -> None:
        for slot in slots:
            slot.version += 1
            slot.last_updated = now
        session.version += 1
        session.last_updated = now

    @staticmethod
    def _touch_appointment(record: AppointmentRec, now: datetime) -> None:
        record.version += 1
        record.last_updated = now

    def _release(self, state: HospitalState, record: AppointmentRec, status: str, reason: str, now: datetime) -> None:
        """End an appointment; its number goes back to the platform pool."""
        slot = state.slots[record.slot_id]
        if record.holds:
            slot.held -= 1
            record.holds = False
        if record.offset is not None:
            slot.used.discard(record.offset)
        record.status = status
        record.cancel_reason = reason
        state.locks.pop(record.id, None)
        self._touch_appointment(record, now)
        self._touch(state.sessions[record.session_id], [slot], now)

    def _check_open(self, session: SessionRec, slot: SlotRec, now: datetime) -> None:
        if not session.active:
            raise FhirError(422, "business-rule", f"出诊已停诊：{session.stop_reason or DEFAULT_STOP_REASON}")
        if slot.start <= now:
            raise FhirError(422, "business-rule", "该时段已开始，不能再预约")

    @staticmethod
    def _check_room(slot: SlotRec) -> None:
        if slot.booked >= slot.capacity:
            raise FhirError(409, "conflict", "该时段号源已约满")

    @staticmethod
    def _give_number(slot: SlotRec, record: AppointmentRec) -> None:
        offset = 0
        while offset in slot.used:
            offset += 1
        slot.used.add(offset)
        record.offset = offset
        record.queue_number = slot.first_number + slot.onsite + offset

    # --- appointments ------------------------------------------------------------------------------------------

    def create_appointment(self, state: HospitalState, resource: Resource) -> tuple[AppointmentRec, bool]:
        """Lock (``proposed``) or register (``booked``); a known request key returns the first appointment."""
        status = resource.get("status")
        if status not in ("proposed", "booked"):
            raise FhirError(400, "invalid", "status must be proposed or booked")
        key = _request_key(resource)
        if key is not None and key in state.keys:
            return state.appointments[state.keys[key]], False
        slot = state.slots.get(_slot_id(resource) or "")
        if slot is None:
            raise FhirError(404, "not-found", "unknown slot")
        patid = _patient_id(resource)
        if patid is None or patid not in state.patients:
            raise FhirError(404, "not-found", "unknown patient")
        session = state.sessions[slot.session_id]
        now = self.ctx.clock.now()
        self._check_open(session, slot, now)
        lock: AppointmentRec | None = None
        for other in state.appointments.values():
            if other.patid != patid or other.session_id != session.id or other.status not in _ACTIVE:
                continue
            if status == "booked" and other.status == "proposed" and other.slot_id == slot.id:
                lock = other
            else:
                raise FhirError(422, "business-rule", "该患者已预约此出诊")
        if lock is None:
            self._check_room(slot)
        else:
            # A registration by the patient holding a lock on this slot uses the locked number.
            lock.holds = False
            lock.status, lock.cancel_reason = "cancelled", LOCK_CONVERTED
            state.locks.pop(lock.id, None)
            self._touch_appointment(lock, now)
        record = AppointmentRec(
            id=state.next_id("A"),
            status=status,
            slot_id=slot.id,
            session_id=session.id,
            patid=patid,
            key=key,
            created=now,
            last_updated=now,
        )
        if lock is None:
            slot.held += 1
        if status == "proposed":
            record.lock_expires = now + timedelta(minutes=self.lock_minutes)
            state.locks[record.id] = record
        else:
            self._give_number(slot, record)
        state.appointments[record.id] = record
        if key is not None:
            state.keys[key] = record.id
        self._touch(session, [slot], now)
        return record, True

    def appointment(self, state: HospitalState, appointment_id: str) -> AppointmentRec:
        record = state.appointments.get(appointment_id)
        if record is None:
            raise FhirError(404, "not-found", f"unknown Appointment {appointment_id!r}")
        return record

    def update_appointment(self, state: HospitalState, appointment_id: str, resource: Resource) -> AppointmentRec:
        """Confirm a lock, cancel, check in (``arrived``), ``noshow``, ``fulfilled``; the same status is a no-op."""
        record = self.appointment(state, appointment_id)
        if resource.get("id") not in (None, appointment_id):
            raise FhirError(400, "invalid", "the id in the body differs from the URL")
        wanted = resource.get("status")
        if not isinstance(wanted, str):
            raise FhirError(400, "invalid", "status is required")
        if wanted == record.status:
            return record
        if record.expired and wanted == "booked":
            raise FhirError(409, "conflict", "锁号已过期，号源已释放")
        if wanted not in _TRANSITIONS.get(record.status, frozenset()):
            raise FhirError(422, "business-rule", f"预约状态不能从 {record.status} 变为 {wanted}")
        now = self.ctx.clock.now()
        session = state.sessions[record.session_id]
        slot = state.slots[record.slot_id]
        if wanted == "cancelled":
            reason = resource.get("cancelationReason")
            text = reason.get("text") if isinstance(reason, dict) else None
            self._release(state, record, "cancelled", text if isinstance(text, str) else "患者取消", now)
            return record
        if wanted == "booked":
            self._check_open(session, slot, now)
            self._give_number(slot, record)
            record.lock_expires = None
            state.locks.pop(record.id, None)
        elif wanted == "arrived":
            if not session.active:
                raise FhirError(422, "business-rule", "出诊已停诊，不能签到")
            if now.astimezone(SHANGHAI).date() != session.day:
                raise FhirError(422, "business-rule", "只能在就诊当天签到")
        record.status = wanted
        self._touch_appointment(record, now)
        return record

    def queue(self, state: HospitalState, record: AppointmentRec) -> tuple[int, int | None] | None:
        """(checked-in patients ahead, the number being seen) for a registration; None otherwise."""
        if record.status not in ("booked", "arrived") or record.queue_number is None:
            return None
        waiting = [
            other.queue_number
            for other in state.appointments.values()
            if other.session_id == record.session_id and other.status == "arrived" and other.queue_number is not None
        ]
        ahead = sum(1 for number in waiting if number < record.queue_number)
        return ahead, min(waiting, default=None)

    def render_appointment(self, state: HospitalState, record: AppointmentRec) -> Resource:
        return fhir.appointment(
            record,
            state.slots[record.slot_id],
            state.sessions[record.session_id],
            state.directory,
            queue=self.queue(state, record),
        )

    # --- patients ----------------------------------------------------------------------------------------------

    def create_patient(
        self, state: HospitalState, resource: Resource, if_none_exist: str | None
    ) -> tuple[PatientRec, bool]:
        """Conditional create: the one match (200), a new patient (201), 412 for more than one match."""
        if if_none_exist:
            matches = self._match_patients(state, if_none_exist)
            if len(matches) > 1:
                raise FhirError(412, "multiple-matches", "条件匹配到多个患者")
            if matches:
                return matches[0], False
        now = self.ctx.clock.now()
        patid = state.next_id("")
        identifiers = [
            (str(item["system"]), str(item["value"]))
            for item in resource.get("identifier") or ()
            if isinstance(item, dict) and item.get("system") and item.get("value") and item.get("system") != fhir.PATID
        ]
        guardians = []
        for contact in resource.get("contact") or ():
            value = fhir.extension_value(contact, "guardian-identifier")
            if isinstance(value, dict) and value.get("system") and value.get("value"):
                guardians.append((str(value["system"]), str(value["value"])))
        stored: Resource = {key: value for key, value in resource.items() if key not in ("id", "meta", "identifier")}
        stored = {
            "resourceType": "Patient",
            "id": patid,
            "meta": fhir.meta(1, now),
            "identifier": [fhir.identifier(fhir.PATID, patid), *(fhir.identifier(s, v) for s, v in identifiers)],
            **{key: value for key, value in stored.items() if key != "resourceType"},
        }
        record = PatientRec(
            patid=patid,
            resource=stored,
            identifiers=identifiers,
            guardians=guardians,
            name=_patient_name(resource),
            birth_date=resource.get("birthDate") if isinstance(resource.get("birthDate"), str) else None,
        )
        state.patients[patid] = record
        self._seed_bills(state, patid, now)
        return record, True

    @staticmethod
    def _match_patients(state: HospitalState, criteria: str) -> list[PatientRec]:
        raw = criteria.strip()
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            raw = raw.encode("latin-1").decode("utf-8")  # UTF-8 sent unencoded arrives read as Latin-1
        pairs = parse_qsl(raw.removeprefix("Patient?"), keep_blank_values=True)
        if not pairs:
            raise FhirError(400, "invalid", "If-None-Exist has no criteria")
        fields = {"name": "name", "birthdate": "birth_date", "_id": "patid"}
        for name, _ in pairs:
            if name not in ("identifier", "guardian-identifier", *fields):
                raise FhirError(400, "invalid", f"unsupported If-None-Exist criterion {name!r}")

        def matches(patient: PatientRec) -> bool:
            for name, value in pairs:
                if name in fields:
                    if getattr(patient, fields[name]) != value.strip():
                        return False
                    continue
                system, bar, code = value.partition("|")
                wanted = (system, code) if bar else (None, value)
                if not _has_identifier(patient, wanted=wanted, guardian=name == "guardian-identifier"):
                    return False
            return True

        return [p for p in state.patients.values() if matches(p)]

    # --- billing -----------------------------------------------------------------------------------------------

    def _seed_bills(self, state: HospitalState, patid: str, now: datetime) -> None:
        """A new patient has one or two unpaid bills (the demo's 诊间支付), drawn from the patid."""
        rng = random.Random(f"{self._day_base}:{state.code}:bills:{patid}")  # noqa: S311
        for bill in generate_bills(state.directory, patid, rng=rng, now=now, ids=state.next_bill_id):
            state.bills[bill.id] = bill

    def billing(self, code: str) -> HospitalState:
        """The hospital for an Invoice request: 503 while the hospital or its billing is switched off."""
        state = self.serving(code)
        if not state.billing_online:
            raise FhirError(503, "transient", "收费系统维护中", headers={"Retry-After": "30"})
        return state

    def add_bill(
        self,
        state: HospitalState,
        patid: str,
        items: Sequence[BillItemRec],
        *,
        department_code: str | None = None,
        doctor_code: str | None = None,
    ) -> BillRec:
        """A bill the HIS issues now (test helper); the doctor is the first on duty of the department (or any)."""
        if patid not in state.patients:
            raise FhirError(404, "not-found", "unknown patient")
        if not items:
            raise FhirError(400, "invalid", "a bill needs items")
        directory = state.directory
        doctor = directory.doctor(doctor_code) if doctor_code else None
        if doctor_code and doctor is None:
            raise FhirError(404, "not-found", f"unknown doctor {doctor_code!r}")
        if doctor is None:
            on_duty = [
                d
                for d in directory.doctors
                if not d.on_leave and (department_code is None or d.department_code == department_code)
            ]
            doctor = on_duty[0] if on_duty else None
        department = department_code or (doctor.department_code if doctor else None)
        if department is None or directory.department(department) is None:
            raise FhirError(404, "not-found", f"unknown department {department_code!r}")
        now = self.ctx.clock.now()
        bill = BillRec(
            id=state.next_bill_id(),
            patid=patid,
            department_code=department,
            doctor_code=doctor.code if doctor else None,
            issued_at=now,
            items=list(items),
            last_updated=now,
        )
        state.bills[bill.id] = bill
        return bill

    def bill(self, state: HospitalState, bill_id: str) -> BillRec:
        bill = state.bills.get(bill_id)
        if bill is None:
            raise FhirError(404, "not-found", f"unknown Invoice {bill_id!r}")
        return bill

    def cancel_bill(self, state: HospitalState, bill_id: str, reason: str | None) -> BillRec:
        """The HIS withdraws a bill (作废); a settled bill cannot be, a cancelled one stays as it is."""
        bill = self.bill(state, bill_id)
        if bill.status == "cancelled":
            return bill
        if bill.status == "balanced":
            raise FhirError(409, "conflict", "已缴费的账单不能作废")
        bill.status = "cancelled"
        bill.cancel_reason = (reason or "").strip() or "医生撤销医嘱"
        bill.version += 1
        bill.last_updated = self.ctx.clock.now()
        return bill

    def settle(self, state: HospitalState, bill_id: str, parameters: Resource) -> BillRec:
        """``$settle``: idempotent by request key; a refusal is final for its key."""
        key_token = fhir.parameter(parameters, "requestKey", "Identifier")
        if not isinstance(key_token, dict) or key_token.get("system") != fhir.REQUEST_KEY or not key_token.get("value"):
            raise FhirError(400, "invalid", f"requestKey must be an identifier of {fhir.REQUEST_KEY}")
        key = str(key_token["value"])
        amount = fhir.fen_of(fhir.parameter(parameters, "amount", "Money"), "amount")
        reference = fhir.parameter(parameters, "paymentReference", "String")
        channel = fhir.parameter(parameters, "channel", "Code")
        if not isinstance(reference, str) or not reference.strip():
            raise FhirError(400, "invalid", "paymentReference is required")
        if not isinstance(channel, str) or not channel.strip():
            raise FhirError(400, "invalid", "channel is required")
        patient = fhir.parameter(parameters, "patient", "Identifier")
        patid = patient.get("value") if isinstance(patient, dict) and patient.get("system") == fhir.PATID else None
        if patient is not None and not patid:
            raise FhirError(400, "invalid", f"patient must be an identifier of {fhir.PATID}")

        refused = state.settle_refusals.get(key)
        if refused is not None:
            raise refused
        try:
            return self._settle(
                state, bill_id, key=key, amount=amount, patid=patid, reference=reference, channel=channel
            )
        except FhirError as exc:
            if exc.detail_code is not None:
                state.settle_refusals[key] = exc
            raise

    def _settle(
        self,
        state: HospitalState,
        bill_id: str,
        *,
        key: str,
        amount: int,
        patid: str | None,
        reference: str,
        channel: str,
    ) -> BillRec:
        def refuse(status: int, code: str, detail: str, diagnostics: str) -> FhirError:
            return FhirError(status, code, diagnostics, detail_code=detail, detail_system=fhir.SETTLEMENT_REFUSAL)

        bill = state.bills.get(bill_id)
        if bill is None:
            raise refuse(404, "not-found", "unknown-bill", f"unknown Invoice {bill_id!r}")
        if bill.status == "balanced":
            if bill.key == key:
                return bill
            raise refuse(409, "conflict", "already-settled", "该账单已缴费")
        if state.settle_keys.get(key, bill_id) != bill_id:
            raise refuse(422, "business-rule", "key-reused", "该请求号已用于其他账单")
        if bill.status == "cancelled":
            raise refuse(409, "conflict", "bill-cancelled", f"该账单已作废：{bill.cancel_reason or ''}")
        if patid is not None and patid != bill.patid:
            raise refuse(422, "business-rule", "wrong-patient", "账单不属于该患者")
        if amount != bill.total_fen:
            raise refuse(422, "business-rule", "amount-mismatch", "缴费金额与账单金额不符")
        if state.refuse_settlements > 0:
            state.refuse_settlements -= 1
            raise refuse(422, "business-rule", "refused", SETTLEMENT_REFUSED)
        now = self.ctx.clock.now()
        bill.status = "balanced"
        bill.key = key
        bill.receipt_no = state.next_receipt_no()
        bill.settled_at = now
        bill.payment_ref = reference.strip()
        bill.channel = channel.strip()
        bill.version += 1
        bill.last_updated = now
        state.settle_keys[key] = bill.id
        return bill

    # --- sessions ----------------------------------------------------------------------------------------------

    def session(self, state: HospitalState, session_id: str) -> SessionRec:
        session = state.sessions.get(session_id)
        if session is None:
            raise FhirError(404, "not-found", f"unknown Schedule {session_id!r}")
        return session

    async def stop_session(
        self, state: HospitalState, session_id: str, reason: str | None, *, base: str
    ) -> tuple[SessionRec, str | None]:
        """停诊: the session and its slots change (one push); stopping a stopped session changes nothing."""
        session = self.session(state, session_id)
        if not session.active:
            return session, None
        now = self.ctx.clock.now()
        session.active = False
        session.stop_reason = (reason or "").strip() or DEFAULT_STOP_REASON
        self._touch(session, session.slots, now)
        pushed = await self._push(state, session, session.slots, base=base, now=now)
        return session, pushed

    async def set_capacity(
        self, state: HospitalState, slot_id: str, capacity: int, *, base: str
    ) -> tuple[SlotRec, str | None]:
        """The HIS changes how many of a slot's numbers are the platform's (on-site numbers stay)."""
        slot = state.slots.get(slot_id)
        if slot is None:
            raise FhirError(404, "not-found", f"unknown Slot {slot_id!r}")
        if capacity == slot.capacity:
            return slot, None
        now = self.ctx.clock.now()
        slot.capacity = capacity
        session = state.sessions[slot.session_id]
        self._touch(session, [slot], now)
        pushed = await self._push(state, session, [slot], base=base, now=now)
        return slot, pushed

    async def _push(
        self, state: HospitalState, session: SessionRec, slots: Sequence[SlotRec], *, base: str, now: datetime
    ) -> str | None:
        """Post the changed Schedule and Slots to the subscriber, signed with the hospital's secret."""
        if self.callback_base_url is None:
            return None
        self._pushes += 1
        resources = [fhir.schedule(session, state.directory), *(fhir.slot(s, session) for s in slots)]
        body = fhir.encode(fhir.history(resources, bundle_id=f"push-{self._pushes}", base=base, now=now))
        headers = {"Content-Type": fhir.FHIR_JSON}
        secret = self.subscription_secrets.get(state.code)
        if secret:
            headers["X-HSP-Signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        url = f"{self.callback_base_url.rstrip('/')}/callbacks/his/{state.code}"
        return await self.ctx.callbacks.send(url, body, headers, retry_schedule=PUSH_RETRIES)

    # --- searches ----------------------------------------------------------------------------------------------

    def search(self, state: HospitalState, resource_type: str, query: Query) -> list[Render]:
        """What matches, in a stable order, each rendered only when its page is served."""
        searches: dict[str, Callable[[HospitalState, Query], list[Render]]] = {
            "Organization": self._organizations,
            "HealthcareService": self._services,
            "Practitioner": self._practitioners,
            "PractitionerRole": self._roles,
            "Schedule": self._schedules,
            "Slot": self._slots,
            "Appointment": self._appointments,
            "Patient": self._patients,
            "Invoice": self._invoices,
        }
        search = searches.get(resource_type)
        if search is None:
            raise FhirError(404, "not-supported", f"resource type {resource_type!r} is not served")
        return search(state, query)

    def read(self, state: HospitalState, resource_type: str, resource_id: str) -> Resource:
        found = self.search(state, resource_type, Query((("_id", resource_id),)))
        if not found:
            raise FhirError(404, "not-found", f"unknown {resource_type} {resource_id!r}")
        return found[0]()

    def _organizations(self, state: HospitalState, query: Query) -> list[Render]:
        info = state.directory.hospital
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        if (wanted and not fhir.token_matches(wanted, fhir.HOSPITAL, info.code)) or (ids and info.code not in ids):
            return []
        return [functools.partial(fhir.organization, info)]

    def _services(self, state: HospitalState, query: Query) -> list[Render]:
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        info = state.directory.hospital
        return [
            functools.partial(fhir.healthcare_service, d, info)
            for d in state.directory.departments
            if (not wanted or fhir.token_matches(wanted, fhir.DEPARTMENT, d.code)) and (not ids or d.code in ids)
        ]

    def _doctors(self, state: HospitalState, query: Query) -> list[DoctorRec]:
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        active = query.first("active")
        services = fhir.references(query, "service", "HealthcareService")
        return [
            d
            for d in state.directory.doctors
            if (not wanted or fhir.token_matches(wanted, fhir.PRACTITIONER, d.code))
            and (not ids or d.code in ids)
            and (active is None or (active == "true") != d.on_leave)
            and (not services or d.department_code in services)
        ]

    def _practitioners(self, state: HospitalState, query: Query) -> list[Render]:
        return [functools.partial(fhir.practitioner, d) for d in self._doctors(state, query)]

    def _roles(self, state: HospitalState, query: Query) -> list[Render]:
        return [functools.partial(fhir.practitioner_role, d, state.directory) for d in self._doctors(state, query)]

    def includes(self, state: HospitalState, page: Sequence[Resource], query: Query) -> list[Resource]:
        """``_include=PractitionerRole:practitioner``: the Practitioners of the roles on the page."""
        if "PractitionerRole:practitioner" not in query.all("_include"):
            return []
        codes = [r["id"] for r in page if r.get("resourceType") == "PractitionerRole"]
        return [fhir.practitioner(d) for d in state.directory.doctors if d.code in codes]

    def _schedules(self, state: HospitalState, query: Query) -> list[Render]:
        dates = fhir.date_filter(query.all("date"))
        updated = fhir.instant_filter(query.all("_lastUpdated"))
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        actors = fhir.references(query, "actor", "")
        active = query.first("active")
        found = [
            s
            for s in state.sessions.values()
            if fhir.session_matches_dates(s, dates)
            and all(fhir.compare(prefix, s.last_updated, moment) for prefix, moment in updated)
            and (not wanted or fhir.token_matches(wanted, fhir.SESSION, s.id))
            and (not ids or s.id in ids)
            and (not actors or s.department_code in actors or s.doctor_code in actors)
            and (active is None or (active == "true") == s.active)
        ]
        found.sort(key=lambda s: (s.start, s.id))
        return [functools.partial(fhir.schedule, s, state.directory) for s in found]

    def _slots(self, state: HospitalState, query: Query) -> list[Render]:
        schedules = fhir.references(query, "schedule", "Schedule")
        ids = query.all("_id")
        statuses = [s for raw in query.all("status") for s in raw.split(",")]
        if schedules:
            sessions = [state.sessions[i] for i in dict.fromkeys(schedules) if i in state.sessions]
            candidates = [slot for session in sessions for slot in session.slots]
        else:
            candidates = sorted(state.slots.values(), key=lambda slot: (slot.start, slot.id))
        renders: list[Render] = []
        for slot in candidates:
            session = state.sessions[slot.session_id]
            if ids and slot.id not in ids:
                continue
            if statuses and fhir.slot_status(slot, session) not in statuses:
                continue
            renders.append(functools.partial(fhir.slot, slot, session))
        return renders

    def _appointments(self, state: HospitalState, query: Query) -> list[Render]:
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        patients = fhir.references(query, "patient", "Patient")
        return [
            functools.partial(self.render_appointment, state, a)
            for a in state.appointments.values()
            if (not wanted or (a.key is not None and fhir.token_matches(wanted, fhir.REQUEST_KEY, a.key)))
            and (not ids or a.id in ids)
            and (not patients or a.patid in patients)
        ]

    def _invoices(self, state: HospitalState, query: Query) -> list[Render]:
        """``subject`` (or ``patient``) ``Patient/{patid}``, ``status`` (comma-separated), ``identifier``
        (the receipt), ``_id``; oldest first."""
        patients = fhir.references(query, "subject", "Patient") + fhir.references(query, "patient", "Patient")
        statuses = [s for raw in query.all("status") for s in raw.split(",")]
        wanted = fhir.tokens(query, "identifier")
        ids = query.all("_id")
        found = [
            b
            for b in state.bills.values()
            if (not patients or b.patid in patients)
            and (not statuses or b.status in statuses)
            and (not wanted or (b.receipt_no is not None and fhir.token_matches(wanted, fhir.RECEIPT, b.receipt_no)))
            and (not ids or b.id in ids)
        ]
        found.sort(key=lambda b: (b.issued_at, b.id))
        return [functools.partial(fhir.invoice, b, state.directory) for b in found]

    def _patients(self, state: HospitalState, query: Query) -> list[Render]:
        """``identifier`` (an ID document or the patid), ``guardian-identifier``, ``name`` (the whole name, exactly,
        as the conditional create matches it), ``birthdate`` (a day, ``eq`` or no prefix) and ``_id``; the
        parameters are ANDed, the comma-separated values of one parameter ORed."""
        wanted = fhir.tokens(query, "identifier")
        guardians = fhir.tokens(query, "guardian-identifier")
        names = [n.strip() for raw in query.all("name") for n in raw.split(",")]
        births = [b.strip().removeprefix("eq") for raw in query.all("birthdate") for b in raw.split(",")]
        ids = query.all("_id")
        return [
            functools.partial(fhir.patient, p)
            for p in state.patients.values()
            if (
                not wanted
                or fhir.token_matches(wanted, fhir.PATID, p.patid)
                or any(fhir.token_matches(wanted, s, v) for s, v in p.identifiers)
            )
            and (not guardians or any(fhir.token_matches(guardians, s, v) for s, v in p.guardians))
            and (not names or p.name in names)
            and (not births or p.birth_date in births)
            and (not ids or p.patid in ids)
        ]


# --- reading requests --------------------------------------------------------------------------------------


def _request_key(resource: Resource) -> str | None:
    for item in resource.get("identifier") or ():
        if isinstance(item, dict) and item.get("system") == fhir.REQUEST_KEY and item.get("value"):
            return str(item["value"])
    return None


def _reference_id(reference: Any, resource_type: str) -> str | None:
    if not isinstance(reference, str):
        return None
    kind, slash, ident = reference.rpartition("/")
    return ident if slash and kind.endswith(resource_type) and ident else None


def _slot_id(resource: Resource) -> str | None:
    slots = resource.get("slot")
    if not isinstance(slots, list) or not slots or not isinstance(slots[0], dict):
        raise FhirError(400, "invalid", "slot[0] is required")
    return _reference_id(slots[0].get("reference"), "Slot")


def _patient_id(resource: Resource) -> str | None:
    for participant in resource.get("participant") or ():
        actor = participant.get("actor") if isinstance(participant, dict) else None
        if not isinstance(actor, dict):
            continue
        ident = _reference_id(actor.get("reference"), "Patient")
        if ident is not None:
            return ident
        token = actor.get("identifier")
        if isinstance(token, dict) and token.get("system") == fhir.PATID and token.get("value"):
            return str(token["value"])
    return None


def _patient_name(resource: Resource) -> str:
    names = resource.get("name")
    if not isinstance(names, list) or not names or not isinstance(names[0], dict):
        return ""
    first = names[0]
    if isinstance(first.get("text"), str):
        return str(first["text"]).strip()
    given = first.get("given") or []
    return f"{first.get('family') or ''}{''.join(str(g) for g in given)}".strip()


def _has_identifier(patient: PatientRec, *, wanted: tuple[str | None, str], guardian: bool) -> bool:
    system, value = wanted
    pool = patient.guardians if guardian else [*patient.identifiers, (fhir.PATID, patient.patid)]
    return any((system is None or s == system) and v == value for s, v in pool)
