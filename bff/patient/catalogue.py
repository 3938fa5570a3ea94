"""Browsing hospitals, departments, doctors and their sessions with remaining numbers. Public (no login),
served from our synced copy and cached briefly, so a hospital whose HIS is down stays browsable."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec
from litestar import Router, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter

from bff.services import catalogue_service as service
from domain.catalogue.model import Department, Doctor, Hospital, HospitalLevel, SessionView
from domain.catalogue.use_cases import cache_key
from domain.kernel.errors import ValidationError


class HospitalOut(msgspec.Struct, rename="camel"):
    code: str
    name: str
    level: str
    region_code: str
    address: str
    phone: str


class HospitalPageOut(msgspec.Struct, rename="camel"):
    items: list[HospitalOut]
    next_cursor: str | None = None


class DepartmentOut(msgspec.Struct, rename="camel"):
    code: str
    name: str
    description: str
    parent_code: str | None = None


class DepartmentsOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    items: list[DepartmentOut]


class DoctorOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    code: str
    name: str
    title: str
    department_codes: list[str]
    specialties: list[str]
    on_leave: bool


class DoctorPageOut(msgspec.Struct, rename="camel"):
    items: list[DoctorOut]
    next_cursor: str | None = None


class DoctorProfileOut(msgspec.Struct, rename="camel"):
    doctor: DoctorOut
    introduction: str


class SlotOut(msgspec.Struct, rename="camel"):
    slot_id: str
    start: datetime
    end: datetime
    remaining: int


class SessionOut(msgspec.Struct, rename="camel"):
    session_id: str
    hospital_code: str
    department_code: str
    day: date
    period: str
    status: str
    fee_fen: int
    remaining: int
    slots: list[SlotOut]
    doctor_code: str | None = None
    stop_reason: str | None = None


class SessionsOut(msgspec.Struct, rename="camel"):
    items: list[SessionOut]


def _hospital(h: Hospital) -> HospitalOut:
    return HospitalOut(
        code=h.code, name=h.name, level=h.level.value, region_code=h.region_code, address=h.address, phone=h.phone
    )


def _doctor(d: Doctor) -> DoctorOut:
    return DoctorOut(
        hospital_code=d.hospital_code,
        code=d.code,
        name=d.name,
        title=d.title.value,
        department_codes=list(d.department_codes),
        specialties=list(d.specialties),
        on_leave=d.on_leave,
    )


def _department(d: Department) -> DepartmentOut:
    return DepartmentOut(code=d.code, name=d.name, description=d.description, parent_code=d.parent_code)


def session_out(s: SessionView) -> SessionOut:
    return SessionOut(
        session_id=s.session_id,
        hospital_code=s.hospital_code,
        department_code=s.department_code,
        day=s.day,
        period=s.period.value,
        status=s.status.value,
        fee_fen=s.fee_fen,
        remaining=s.remaining,
        slots=[SlotOut(slot_id=x.slot_id, start=x.start, end=x.end, remaining=x.remaining) for x in s.slots],
        doctor_code=s.doctor_code,
        stop_reason=s.stop_reason,
    )


Limit = Annotated[int, QueryParameter(ge=1, le=100, description="page size")]


@get("/hospitals", operation_id="catalogueHospitals", summary="Hospitals, by region and level")
async def hospitals(
    state: State,
    region: FromQuery[str | None] = None,
    level: FromQuery[HospitalLevel | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: Limit = 20,
) -> HospitalPageOut:
    svc = service(state)

    async def produce() -> bytes:
        items = await svc.hospitals(region_prefix=region, level=level, after=cursor, limit=limit)
        page = HospitalPageOut(
            items=[_hospital(h) for h in items], next_cursor=items[-1].code if items and len(items) == limit else None
        )
        return msgspec.json.encode(page)

    raw = await svc.cached(cache_key("hospitals", await svc.generation(), region, level, cursor, limit), produce)
    return msgspec.json.decode(raw, type=HospitalPageOut)


@get("/hospitals/{hospital_code:str}/departments", operation_id="catalogueDepartments", summary="Departments")
async def departments(state: State, hospital_code: FromPath[str]) -> DepartmentsOut:
    svc = service(state)

    async def produce() -> bytes:
        items = await svc.departments(hospital_code)
        return msgspec.json.encode(DepartmentsOut(hospital_code=hospital_code, items=[_department(d) for d in items]))

    raw = await svc.cached(cache_key("departments", await svc.generation(), hospital_code), produce)
    return msgspec.json.decode(raw, type=DepartmentsOut)


@get(
    "/doctors",
    operation_id="catalogueDoctors",
    summary="Find doctors by hospital, department, name, specialty or symptom keyword",
)
async def find_doctors(
    state: State,
    hospital: FromQuery[str | None] = None,
    department: FromQuery[str | None] = None,
    q: Annotated[str | None, QueryParameter(max_length=40, description="name, specialty or symptom keyword")] = None,
    cursor: FromQuery[str | None] = None,
    limit: Limit = 20,
) -> DoctorPageOut:
    if department and not hospital:
        raise ValidationError(
            "department needs hospital",
            code="catalogue.department_needs_hospital",
            message="按科室查询时请同时指定医院",
        )
    svc = service(state)

    async def produce() -> bytes:
        items = await svc.doctors(
            hospital_code=hospital, department_code=department, query=q, after=cursor, limit=limit
        )
        last = items[-1] if items and len(items) == limit else None
        page = DoctorPageOut(
            items=[_doctor(d) for d in items], next_cursor=f"{last.hospital_code}/{last.code}" if last else None
        )
        return msgspec.json.encode(page)

    raw = await svc.cached(
        cache_key("doctors", await svc.generation(), hospital, department, q, cursor, limit), produce
    )
    return msgspec.json.decode(raw, type=DoctorPageOut)


@get(
    "/hospitals/{hospital_code:str}/doctors/{doctor_code:str}",
    operation_id="catalogueDoctor",
    summary="A doctor's profile",
)
async def doctor(state: State, hospital_code: FromPath[str], doctor_code: FromPath[str]) -> DoctorProfileOut:
    d = await service(state).doctor(hospital_code, doctor_code)
    return DoctorProfileOut(doctor=_doctor(d), introduction=d.introduction)


@get(
    "/hospitals/{hospital_code:str}/doctors/{doctor_code:str}/sessions",
    operation_id="catalogueDoctorSessions",
    summary="A doctor's sessions with remaining numbers per slot",
)
async def doctor_sessions(state: State, hospital_code: FromPath[str], doctor_code: FromPath[str]) -> SessionsOut:
    svc = service(state)
    await svc.doctor(hospital_code, doctor_code)

    async def produce() -> bytes:
        items = await svc.sessions(hospital_code, doctor_code=doctor_code)
        return msgspec.json.encode(SessionsOut(items=[session_out(s) for s in items]))

    raw = await svc.cached(cache_key("doctor-sessions", await svc.generation(), hospital_code, doctor_code), produce)
    return msgspec.json.decode(raw, type=SessionsOut)


@get(
    "/hospitals/{hospital_code:str}/departments/{department_code:str}/sessions",
    operation_id="catalogueDepartmentSessions",
    summary="A department's sessions with remaining numbers",
)
async def department_sessions(
    state: State, hospital_code: FromPath[str], department_code: FromPath[str]
) -> SessionsOut:
    svc = service(state)
    await svc.hospital(hospital_code)

    async def produce() -> bytes:
        items = await svc.sessions(hospital_code, department_code=department_code)
        return msgspec.json.encode(SessionsOut(items=[session_out(s) for s in items]))

    raw = await svc.cached(cache_key("dept-sessions", await svc.generation(), hospital_code, department_code), produce)
    return msgspec.json.decode(raw, type=SessionsOut)


catalogue_router = Router(
    path="/api/v1/patient/catalogue",
    tags=["patient"],
    route_handlers=[hospitals, departments, find_doctors, doctor, doctor_sessions, department_sessions],
)
