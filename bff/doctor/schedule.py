"""The doctor's own sessions: reading them with their patients (masked), and stopping one (停诊), which goes to
the HIS first, then to our copy and the bookings (domain/booking/stops.py)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from bff.auth.guards import require_staff
from bff.auth.principal import current_session
from bff.auth.routes import client_context
from bff.services import account_service as accounts
from bff.services import booking_service
from bff.services import catalogue_service as service
from domain.account.model import StaffRole
from domain.booking.doctor_schedule import DoctorSession, doctor_schedule
from domain.booking.model import BookingState


class StopIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=2, max_length=200, examples=["临时外出会诊"])]


class StopOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    session_id: str
    status: str


@post(
    "/api/v1/doctor/sessions/{hospital_code:str}/{session_id:str}/stop",
    operation_id="doctorStopSession",
    summary="Stop one of my sessions (停诊)",
    tags=["doctor"],
    guards=[require_staff("doctor")],
    security=[{"bearer": []}],
)
async def stop_session(
    state: State,
    request: Request[Any, Any, Any],
    hospital_code: FromPath[str],
    session_id: FromPath[str],
    data: JSONBody[StopIn],
) -> StopOut:
    session = current_session(request)
    staff = await accounts(state).staff_profile(session)
    links = {link.hospital_code: link.practitioner_id for link in staff.links}
    await service(state).stop_session(session, hospital_code, session_id, reason=data.reason, links=links)
    return StopOut(hospital_code=hospital_code, session_id=session_id, status="stopped")


class ScheduledPatientOut(msgspec.Struct, rename="camel"):
    booking_id: str
    state: BookingState
    patient_name: str
    """Masked (``张*``): no ID number, phone or account ever appears here."""
    sex: str
    age: int | None
    queue_number: int | None


class ScheduleSlotOut(msgspec.Struct, rename="camel"):
    slot_id: str
    start: datetime
    end: datetime
    capacity: int
    taken: int
    patients: list[ScheduledPatientOut]


class DoctorSessionOut(msgspec.Struct, rename="camel"):
    hospital_code: str
    session_id: str
    department_code: str
    day: date
    period: str
    status: str
    stop_reason: str | None
    fee_fen: int
    slots: list[ScheduleSlotOut]


class DoctorScheduleOut(msgspec.Struct, rename="camel"):
    first_day: date
    last_day: date
    sessions: list[DoctorSessionOut]


def _session_out(s: DoctorSession) -> DoctorSessionOut:
    return DoctorSessionOut(
        hospital_code=s.hospital_code,
        session_id=s.session_id,
        department_code=s.department_code,
        day=s.day,
        period=s.period.value,
        status=s.status.value,
        stop_reason=s.stop_reason,
        fee_fen=s.fee_fen,
        slots=[
            ScheduleSlotOut(
                slot_id=x.slot_id,
                start=x.start,
                end=x.end,
                capacity=x.capacity,
                taken=x.taken,
                patients=[
                    ScheduledPatientOut(
                        booking_id=p.booking_id,
                        state=p.state,
                        patient_name=p.patient_name,
                        sex=p.sex,
                        age=p.age,
                        queue_number=p.queue_number,
                    )
                    for p in x.patients
                ],
            )
            for x in s.slots
        ],
    )


@get(
    "/api/v1/doctor/schedule",
    operation_id="doctorSchedule",
    summary="My sessions with their slots and booked patients (masked), from..to (Beijing dates, at most 31 days)",
    tags=["doctor"],
    guards=[require_staff("doctor")],
    security=[{"bearer": []}],
)
async def my_schedule(
    state: State,
    request: Request[Any, Any, Any],
    first: Annotated[
        date | None, QueryParameter(name="from", description="first day (YYYY-MM-DD); default today")
    ] = None,
    last: Annotated[
        date | None, QueryParameter(name="to", description="last day, inclusive; default 13 days after from")
    ] = None,
) -> DoctorScheduleOut:
    session = current_session(request)
    staff = await accounts(state).staff_profile(session)
    ctx = client_context(request)
    start, end, sessions = await doctor_schedule(
        booking_service(state),
        staff_account_id=session.account_id,
        links={link.hospital_code: link.practitioner_id for link in staff.links if StaffRole.DOCTOR in link.roles},
        first=first,
        last=last,
        request_id=ctx.request_id,
        source_ip=ctx.ip,
    )
    return DoctorScheduleOut(first_day=start, last_day=end, sessions=[_session_out(s) for s in sessions])
