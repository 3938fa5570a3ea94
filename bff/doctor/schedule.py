"""The doctor's own sessions: stopping one (停诊) goes to the HIS first, then to our copy and the bookings."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from bff.auth.guards import require_staff
from bff.auth.principal import current_session
from bff.services import account_service as accounts
from bff.services import catalogue_service as service


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
