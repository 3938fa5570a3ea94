"""Booking a slot from the number-source pool (统一号源池): hold, read, cancel. Send ``Idempotency-Key`` with the
hold: a retry after a lost answer returns the same booking instead of taking a second number."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_resident
from bff.services import booking_service
from domain.booking.model import Booking, BookingState

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class HoldIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["b3f1c2d4e5f60718293a4b5c6d7e8f90"])]
    hospital_code: Annotated[Code, msgspec.Meta(examples=["H001"])]
    slot_id: Annotated[Code, msgspec.Meta(examples=["H001-S-20261207-AM-01-0800"])]


class BookingOut(msgspec.Struct, rename="camel"):
    id: str
    state: BookingState
    hospital_code: str
    department_code: str
    doctor_code: str | None
    slot_id: str
    slot_start: datetime
    slot_end: datetime
    fee_fen: int
    payment_order_id: str | None
    """Pay it with ``POST /api/v1/patient/payment-orders/{id}/pay`` before ``holdExpiresAt``."""
    hold_expires_at: datetime | None
    cancel_deadline: datetime
    checkin_opens_at: datetime
    checkin_closes_at: datetime
    created_at: datetime
    queue_number: int | None
    end_reason: str | None


class BookingList(msgspec.Struct, rename="camel"):
    items: list[BookingOut]


def booking_out(booking: Booking) -> BookingOut:
    return BookingOut(
        id=booking.id,
        state=booking.state,
        hospital_code=booking.hospital_code,
        department_code=booking.department_code,
        doctor_code=booking.doctor_code,
        slot_id=booking.slot_id,
        slot_start=booking.slot_start,
        slot_end=booking.slot_end,
        fee_fen=booking.fee_fen,
        payment_order_id=booking.payment_order_id,
        hold_expires_at=booking.deadlines.hold_expires_at,
        cancel_deadline=booking.deadlines.cancel_deadline,
        checkin_opens_at=booking.deadlines.checkin_opens_at,
        checkin_closes_at=booking.deadlines.checkin_closes_at,
        created_at=booking.created_at,
        queue_number=booking.queue_number,
        end_reason=booking.end_reason,
    )


@post(
    "/bookings",
    operation_id="patientHold",
    summary="Book a slot for a patient: a held number and its payment order (send Idempotency-Key)",
    status_code=201,
)
async def hold(state: State, request: Request[Any, Any, Any], data: JSONBody[HoldIn]) -> BookingOut:
    account = current_principal(request).subject
    booking = await booking_service(state).hold(account, data.patient_id, data.hospital_code, data.slot_id)
    return booking_out(booking)


@get("/bookings", operation_id="patientBookings", summary="The bookings of every patient I manage, latest first")
async def list_bookings(state: State, request: Request[Any, Any, Any]) -> BookingList:
    found = await booking_service(state).bookings_of(current_principal(request).subject)
    return BookingList(items=[booking_out(b) for b in found])


@get("/bookings/{booking_id:str}", operation_id="patientBooking", summary="One booking")
async def get_booking(
    state: State, request: Request[Any, Any, Any], booking_id: FromPath[Annotated[str, msgspec.Meta(max_length=64)]]
) -> BookingOut:
    return booking_out(await booking_service(state).booking_for(current_principal(request).subject, booking_id))


@post(
    "/bookings/{booking_id:str}/cancel",
    operation_id="patientCancelBooking",
    summary="Cancel a booking (before the cut-off once paid; paid bookings are refunded)",
    status_code=200,
)
async def cancel(
    state: State, request: Request[Any, Any, Any], booking_id: FromPath[Annotated[str, msgspec.Meta(max_length=64)]]
) -> BookingOut:
    return booking_out(await booking_service(state).cancel(current_principal(request).subject, booking_id))


bookings_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[hold, list_bookings, get_booking, cancel],
)
