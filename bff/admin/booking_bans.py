"""Operators: a person's no-shows and suspension of online booking (APT-008), and lifting it. Both are audited;
the answers mask personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter, QueryParameter

from bff.auth.guards import current_principal, require_staff
from bff.services import booking_service
from domain.booking.model import BanLift
from domain.booking.visits import VisitService
from domain.identity.masking import mask_name

_PERSON_ID = r"^[A-Za-z0-9_\-]{1,64}$"
PersonId = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_PERSON_ID)]


class NoShowOut(msgspec.Struct, rename="camel"):
    booking_id: str
    hospital_code: str
    department_code: str
    slot_start: datetime
    forgiven: bool
    """At or before the latest lift: no longer counted."""


class BanOut(msgspec.Struct, rename="camel"):
    hospital_code: str | None
    """None: online booking at every hospital is suspended (the platform's rule); else at that hospital only."""
    until: datetime


class BanLiftOut(msgspec.Struct, rename="camel"):
    id: str
    person_id: str
    covers_until: datetime
    lifted_at: datetime
    actor: str
    reason: str


class BanReviewOut(msgspec.Struct, rename="camel"):
    person_id: str
    name: str
    """Masked."""
    banned: bool
    bans: list[BanOut]
    no_shows: list[NoShowOut]
    forgiven_until: datetime | None
    lifts: list[BanLiftOut]


class LiftIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=2, max_length=200, examples=["患者提供住院证明，爽约情有可原"])]


def _staff(request: Request[Any, Any, Any]) -> str:
    return f"staff:{current_principal(request).subject}"


def _lift_out(lift: BanLift) -> BanLiftOut:
    return BanLiftOut(lift.id, lift.person_id, lift.covers_until, lift.lifted_at, lift.actor, lift.reason)


@get(
    "/bookings/bans",
    operation_id="adminBookingBans",
    summary="A person's no-shows and current suspension of online booking (APT-008)",
)
async def review(
    state: State,
    request: Request[Any, Any, Any],
    person_id: Annotated[str, QueryParameter(name="personId", min_length=1, max_length=64, pattern=_PERSON_ID)],
) -> BanReviewOut:
    found = await VisitService(booking_service(state)).ban_review(_staff(request), person_id)
    forgiven = found.forgiven_until
    return BanReviewOut(
        person_id=found.person_id,
        name=mask_name(found.person_name),
        banned=bool(found.bans),
        bans=[BanOut(b.hospital_code, b.until) for b in found.bans],
        no_shows=[
            NoShowOut(
                b.id,
                b.hospital_code,
                b.department_code,
                b.slot_start,
                forgiven is not None and b.slot_start <= forgiven,
            )
            for b in found.no_shows
        ],
        forgiven_until=forgiven,
        lifts=[_lift_out(lift) for lift in found.lifts],
    )


@post(
    "/bookings/bans/{person_id:str}/lift",
    operation_id="adminLiftBookingBan",
    summary="Lift a person's suspension of online booking: the no-shows so far stop counting (audited)",
    status_code=201,
)
async def lift(
    state: State, request: Request[Any, Any, Any], person_id: PersonId, data: JSONBody[LiftIn]
) -> BanLiftOut:
    done = await VisitService(booking_service(state)).lift_ban(_staff(request), person_id, data.reason)
    return _lift_out(done)


booking_bans_admin_router = Router(
    path="/api/v1/admin",
    tags=["admin"],
    guards=[require_staff("operator", "sysadmin")],
    security=[{"bearer": []}],
    route_handlers=[review, lift],
)
