"""After booking: rescheduling (改约), check-in at the hospital (签到) and the queue (候诊排队). Send
``Idempotency-Key`` with the writes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from bff.auth.guards import current_principal, require_resident
from bff.patient.bookings import BookingOut, Code, booking_out
from bff.services import booking_service
from domain.booking.visits import VisitService
from domain.catalogue.model import QueuePosition

BookingId = Annotated[str, PathParameter(min_length=1, max_length=64)]


class RescheduleIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    slot_id: Annotated[Code, msgspec.Meta(examples=["H001-S-20261208-AM-01-0900"])]
    """Another slot of the same hospital, department and fee."""


class CheckInIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["b3f1c2d4e5f60718293a4b5c6d7e8f90"])]
    """The patient presenting at the hospital: must be the person booked (APT-002)."""


class QueueOut(msgspec.Struct, rename="camel"):
    ahead: int
    """How many patients are before this one in the doctor's queue."""
    current_number: int | None
    """The number being called now, when the HIS tells."""
    queue_number: int | None
    """This booking's number (序号), when the HIS gave one."""


class CheckInOut(msgspec.Struct, rename="camel"):
    booking: BookingOut
    queue: QueueOut | None
    """None when the HIS did not tell the queue."""


def _visits(state: State) -> VisitService:
    return VisitService(booking_service(state))


def _queue(position: QueuePosition | None, queue_number: int | None) -> QueueOut | None:
    if position is None:
        return None
    return QueueOut(ahead=position.ahead, current_number=position.current_number, queue_number=queue_number)


@post(
    "/bookings/{booking_id:str}/reschedule",
    operation_id="patientRescheduleBooking",
    summary="Move a confirmed booking to another slot of the same department and fee (before the cut-off)",
    status_code=200,
)
async def reschedule(
    state: State, request: Request[Any, Any, Any], booking_id: BookingId, data: JSONBody[RescheduleIn]
) -> BookingOut:
    account = current_principal(request).subject
    return booking_out(await _visits(state).reschedule(account, booking_id, data.slot_id))


@post(
    "/bookings/{booking_id:str}/check-in",
    operation_id="patientCheckIn",
    summary="Check in at the hospital (签到) within the booking's check-in window",
    status_code=200,
)
async def check_in(
    state: State, request: Request[Any, Any, Any], booking_id: BookingId, data: JSONBody[CheckInIn]
) -> CheckInOut:
    account = current_principal(request).subject
    arrival = await _visits(state).check_in(account, booking_id, data.patient_id)
    return CheckInOut(booking=booking_out(arrival.booking), queue=_queue(arrival.queue, arrival.booking.queue_number))


@get(
    "/bookings/{booking_id:str}/queue",
    operation_id="patientBookingQueue",
    summary="How many patients are ahead in the doctor's queue (asked of the HIS)",
)
async def queue(state: State, request: Request[Any, Any, Any], booking_id: BookingId) -> QueueOut:
    booking, position = await _visits(state).queue(current_principal(request).subject, booking_id)
    return QueueOut(ahead=position.ahead, current_number=position.current_number, queue_number=booking.queue_number)


booking_visits_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[reschedule, check_in, queue],
)
