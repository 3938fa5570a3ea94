"""The waitlist (候补) of a full session: join, list, leave, and accept a number offered (which books it: a held
booking with its payment order, paid like any other). Send ``Idempotency-Key`` with the writes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import current_principal, require_resident
from bff.patient.bookings import BookingOut, booking_out
from bff.services import booking_service
from domain.booking.waitlist import WaitlistEntry, WaitlistState
from domain.booking.waitlist_service import EntryView, WaitlistService
from domain.kernel.errors import UnavailableError

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
EntryId = Annotated[str, msgspec.Meta(max_length=64)]


class JoinIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    patient_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["b3f1c2d4e5f60718293a4b5c6d7e8f90"])]
    hospital_code: Annotated[Code, msgspec.Meta(examples=["H001"])]
    session_id: Annotated[Code, msgspec.Meta(examples=["H001-S-20261207-AM-01"])]


class WaitlistEntryOut(msgspec.Struct, rename="camel"):
    id: str
    state: WaitlistState
    """``waiting``, ``offered`` (a number is held: accept before ``offerExpiresAt``), ``held`` (accepted: see
    ``bookingId``), ``lapsed``, ``cancelled``."""
    patient_id: str
    hospital_code: str
    department_code: str
    session_id: str
    visit_day: date
    created_at: datetime
    ahead: int | None
    """While waiting: how many are before this entry in line."""
    slot_id: str | None
    slot_start: datetime | None
    offered_at: datetime | None
    offer_expires_at: datetime | None
    """The offer's deadline: counted from the delivery of its message (the latest possible one until then)."""
    booking_id: str | None
    end_reason: str | None


class WaitlistList(msgspec.Struct, rename="camel"):
    items: list[WaitlistEntryOut]


def entry_out(entry: WaitlistEntry, ahead: int | None = None) -> WaitlistEntryOut:
    return WaitlistEntryOut(
        id=entry.id,
        state=entry.state,
        patient_id=entry.patient_id,
        hospital_code=entry.hospital_code,
        department_code=entry.department_code,
        session_id=entry.session_id,
        visit_day=entry.visit_day,
        created_at=entry.created_at,
        ahead=ahead,
        slot_id=entry.slot_id,
        slot_start=entry.slot_start,
        offered_at=entry.offered_at,
        offer_expires_at=entry.offer_expires_at,
        booking_id=entry.booking_id,
        end_reason=entry.end_reason,
    )


def _view_out(view: EntryView) -> WaitlistEntryOut:
    return entry_out(view.entry, view.ahead)


def waitlist_service(state: State) -> WaitlistService:
    service = booking_service(state).d.waitlist
    if not isinstance(service, WaitlistService):
        raise UnavailableError("the waitlist is not configured", code="waitlist.not_configured")
    return service


@post(
    "/waitlist",
    operation_id="patientJoinWaitlist",
    summary="Wait for a full session (候补): the first freed number is offered in line order (send Idempotency-Key)",
    status_code=201,
)
async def join(state: State, request: Request[Any, Any, Any], data: JSONBody[JoinIn]) -> WaitlistEntryOut:
    account = current_principal(request).subject
    service = waitlist_service(state)
    entry = await service.join(account, data.patient_id, data.hospital_code, data.session_id)
    return _view_out(await service.entry_for(account, entry.id))


@get("/waitlist", operation_id="patientWaitlist", summary="My waitlist entries, latest first")
async def list_entries(state: State, request: Request[Any, Any, Any]) -> WaitlistList:
    views = await waitlist_service(state).entries_of(current_principal(request).subject)
    return WaitlistList(items=[_view_out(v) for v in views])


@get("/waitlist/{entry_id:str}", operation_id="patientWaitlistEntry", summary="One waitlist entry")
async def get_entry(state: State, request: Request[Any, Any, Any], entry_id: FromPath[EntryId]) -> WaitlistEntryOut:
    return _view_out(await waitlist_service(state).entry_for(current_principal(request).subject, entry_id))


@delete(
    "/waitlist/{entry_id:str}",
    operation_id="patientLeaveWaitlist",
    summary="Leave the waitlist; a number offered to the entry passes to the next in line",
    status_code=204,
)
async def leave(state: State, request: Request[Any, Any, Any], entry_id: FromPath[EntryId]) -> None:
    await waitlist_service(state).leave(current_principal(request).subject, entry_id)


@post(
    "/waitlist/{entry_id:str}/accept",
    operation_id="patientAcceptWaitlistOffer",
    summary="Book the number offered: a held booking with its payment order (pay it like any booking)",
    status_code=201,
)
async def accept(state: State, request: Request[Any, Any, Any], entry_id: FromPath[EntryId]) -> BookingOut:
    return booking_out(await waitlist_service(state).accept(current_principal(request).subject, entry_id))


waitlist_router = Router(
    path="/api/v1/patient",
    tags=["patient"],
    guards=[require_resident],
    security=[{"bearer": []}],
    route_handlers=[join, list_entries, get_entry, leave, accept],
)
